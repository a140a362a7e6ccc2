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


def split_prompt(ids: list[int], labels: list[int]) -> tuple[list[int], list[int], int]:
    """(prompt ids, response input ids, first target index) of one encoded row.

    encode() masks the targets of the first P-1 positions; position P-1 (the prompt's last
    token) predicts the first response token.
    """
    p = next((t for t, y in enumerate(labels) if y != IGNORE), len(labels)) + 1
    return ids[:p], ids[p:], p - 1


def collate_shared(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Rows that share a prompt (a DPO pair's chosen and rejected; RFT samples of one problem)
    as each distinct prompt once, left-padded, plus every response, right-padded.

    The model then runs each prompt once and each response against the prompt's cached keys
    and values (losses.response_logps); the maths is the same as one row per sequence.
    """
    prompts: dict[tuple, int] = {}
    group, resp, first, resp_labels = [], [], [], []
    for ids, labels in encoded:
        prompt, rest, t = split_prompt(ids, labels)
        group.append(prompts.setdefault(tuple(prompt), len(prompts)))
        resp.append(rest)
        first.append(labels[t])
        resp_labels.append(labels[t + 1:])
    p_ids = [list(p) for p in prompts]
    pw, rw = max(map(len, p_ids)), max(map(len, resp))
    prompt_ids = torch.full((len(p_ids), pw), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(p_ids), pw), dtype=torch.long)
    for i, p in enumerate(p_ids):
        prompt_ids[i, pw - len(p):] = torch.tensor(p, dtype=torch.long)
        prompt_mask[i, pw - len(p):] = 1
    resp_ids = torch.full((len(resp), rw), pad_id, dtype=torch.long)
    labels = torch.full((len(resp), rw), IGNORE, dtype=torch.long)
    resp_mask = torch.zeros((len(resp), rw), dtype=torch.long)
    for i, (r, y) in enumerate(zip(resp, resp_labels)):
        resp_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        labels[i, : len(y)] = torch.tensor(y, dtype=torch.long)
        resp_mask[i, : len(r)] = 1
    g = torch.tensor(group, dtype=torch.long)
    prompt_len = prompt_mask.sum(-1)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
            "prompt_pos": (prompt_mask.cumsum(-1) - 1).clamp(min=0),
            "group": g, "first_targets": torch.tensor(first, dtype=torch.long), "input_ids": resp_ids,
            "labels": labels, "attention_mask": torch.cat([prompt_mask[g], resp_mask], dim=1),
            "position_ids": prompt_len[g, None] + torch.arange(rw)[None, :]}


def collate_best(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """collate_shared when some prompt repeats, else the one-pass left-padded collate."""
    distinct = {tuple(split_prompt(ids, labels)[0]) for ids, labels in encoded}
    return collate_shared(encoded, pad_id) if len(distinct) < len(encoded) else collate(encoded, pad_id)


def n_targets(batch: dict) -> int:
    """Response tokens the batch scores (shared-prompt batches score each first token apart)."""
    first = batch["first_targets"].numel() if "first_targets" in batch else 0
    return int((batch["labels"] != IGNORE).sum()) + first
