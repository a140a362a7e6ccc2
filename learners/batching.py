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


def collate(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Left-padded tensors, so every response ends in the last column.

    Then the LM head only has to run on the last `logits_to_keep` columns (the longest
    response span); position_ids count real tokens only, so a row's values are the same as
    unpadded.
    """
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (x, y) in enumerate(encoded):
        ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        labels[i, width - len(y):] = torch.tensor(y, dtype=torch.long)
        attn[i, width - len(x):] = 1
    cols = (labels != IGNORE).any(0).nonzero()
    keep = width - int(cols[0]) if len(cols) else 1
    return {"input_ids": ids, "labels": labels, "attention_mask": attn,
            "position_ids": (attn.cumsum(-1) - 1).clamp(min=0), "logits_to_keep": keep}


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
