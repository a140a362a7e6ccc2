"""Turning records into padded tensors with the prompt masked out of the labels."""

from __future__ import annotations

import torch

from learners.losses import IGNORE


def encode(tokenizer, messages: list[dict], response: str, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with labels already shifted: labels[t] is the target at t.

    The prompt uses the same chat template the samplers used, so the model is
    trained on exactly the context it generated in.
    """
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
        prompt = prompt["input_ids"]
    prompt = list(prompt)
    resp = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # Keep at least a quarter of the budget for the response; cut the prompt from the left.
    keep_prompt = max(1, min(len(prompt), max_len - min(len(resp), max_len // 4 * 3)))
    prompt = prompt[-keep_prompt:]
    resp = resp[: max_len - len(prompt)]
    ids = prompt + resp
    targets = [IGNORE] * len(prompt) + resp
    return ids[:-1], targets[1:]


def collate(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (x, y) in enumerate(encoded):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        attn[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attn}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
