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
    ids, attn = _left_padded([x for x, _ in encoded], pad_id)
    labels, _ = _left_padded([y for _, y in encoded], IGNORE)  # encode() gives ids and labels one length
    width = ids.shape[1]
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


def common_prefix(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with (the chat template's system turn, a judge's instructions),
    leaving each prompt at least its last token: that one predicts the response's first."""
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    return next((k for k in range(n) if any(p[k] != first[k] for p in prompts)), max(n, 0))


def _left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def collate_shared(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Rows as three levels that the model runs one after the other, each against the keys and
    values of the one before (losses.response_logps): the prefix all prompts share, once; each
    distinct prompt's rest once (a DPO pair's chosen and rejected, RFT samples of one problem
    share it), left-padded; then every response, right-padded. The maths is that of one row per
    sequence; the shared tokens are computed (and back-propagated) once instead of per row.
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
    shared = common_prefix(p_ids)
    prompt_ids, prompt_mask = _left_padded([p[shared:] for p in p_ids], pad_id)
    prompt_attn = torch.cat([torch.ones((len(p_ids), shared), dtype=torch.long), prompt_mask], dim=1)
    rw = max(map(len, resp))
    resp_ids = torch.full((len(resp), rw), pad_id, dtype=torch.long)
    labels = torch.full((len(resp), rw), IGNORE, dtype=torch.long)
    resp_mask = torch.zeros((len(resp), rw), dtype=torch.long)
    for i, (r, y) in enumerate(zip(resp, resp_labels)):
        resp_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        labels[i, : len(y)] = torch.tensor(y, dtype=torch.long)
        resp_mask[i, : len(r)] = 1
    g = torch.tensor(group, dtype=torch.long)
    prompt_len = prompt_attn.sum(-1)
    out = {"prompt_ids": prompt_ids, "prompt_mask": prompt_attn,
           "prompt_pos": (prompt_attn.cumsum(-1) - 1).clamp(min=0)[:, shared:],
           "group": g, "first_targets": torch.tensor(first, dtype=torch.long), "input_ids": resp_ids,
           "labels": labels, "attention_mask": torch.cat([prompt_attn[g], resp_mask], dim=1),
           "position_ids": prompt_len[g, None] + torch.arange(rw)[None, :]}
    if shared:
        out["prefix_ids"] = torch.tensor([p_ids[0][:shared]], dtype=torch.long)
    return out


# Per token cell the shared layout costs more than the one-pass one (two more model calls,
# key/value copies, smaller matrix products): 1.11-1.49x for SmolLM2-135M in fp32 on a 2-core
# AMD EPYC ("layouts" in bench/results/learner.json, where it was faster on all four shapes).
# Shared wins when it saves more than that.
SHARED_CELL_COST = 1.25


def layout_cells(encoded: list[tuple[list[int], list[int]]]) -> tuple[int, int]:
    """(token cells of the one-pass layout, of the shared layout): what each would compute."""
    split = [split_prompt(ids, labels) for ids, labels in encoded]
    one_pass = len(encoded) * max(len(ids) for ids, _ in encoded)
    distinct = list({tuple(p): None for p, _, _ in split})
    shared = common_prefix([list(p) for p in distinct])
    return one_pass, (shared + len(distinct) * max(len(p) - shared for p in distinct)
                      + len(encoded) * max(len(r) for _, r, _ in split))


def collate_best(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """collate_shared when its fewer token cells outweigh its cost per cell, else the one-pass collate."""
    one_pass, shared = layout_cells(encoded)
    return collate_shared(encoded, pad_id) if shared * SHARED_CELL_COST < one_pass else collate(encoded, pad_id)


def n_targets(batch: dict) -> int:
    """Response tokens the batch scores (shared-prompt batches score each first token apart)."""
    first = batch["first_targets"].numel() if "first_targets" in batch else 0
    return int((batch["labels"] != IGNORE).sum()) + first
