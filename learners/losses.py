"""Losses: prompt-masked SFT, and DPO (sigmoid / IPO, optional cDPO smoothing) + λ·NLL.

Conventions, chosen once and used everywhere:
- Labels are the input ids shifted by one, with -100 on prompt and padding tokens,
  so gradients reach response tokens only.
- DPO compares *summed* response log-probs (the standard sequence likelihood).
- The NLL term on the chosen response is a per-token mean (length-normalised).
  A sum would grow with response length and swamp the DPO term (~0.69 at start),
  making λ mean different things for different datasets; with the mean, λ≈1 gives
  both terms the same order of magnitude, which is the scale the paper's grid
  (λ ∈ {0.5, 1, 1.5}) assumes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100
# Logit elements upcast to fp32 at once (64M: 256 MB): 1365 positions of a 49k vocabulary,
# 441 of Qwen's 152k. The full [B, T, V] fp32 log_softmax is never built.
CHUNK_ELEMENTS = 1 << 26


def _target_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) = logit[target] - logsumexp(logits), in fp32, for a [n, V] chunk."""
    x = logits.float()
    return x.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-prob of each label (0 where masked) and the mask itself.

    logits: [B, T, V] for positions 0..T-1; labels: [B, T] already aligned (labels[t]
    is the token predicted at position t). Taken in row chunks: in fp32 autograd keeps only
    views of the logits; in bf16/fp16 each chunk's fp32 copy is recomputed in backward
    (activation checkpointing) instead of kept.
    """
    mask = labels != IGNORE
    targets = labels.masked_fill(~mask, 0).reshape(-1)
    flat = logits.reshape(-1, logits.size(-1))
    rows = max(1, CHUNK_ELEMENTS // flat.size(-1))
    recompute = flat.requires_grad and flat.dtype != torch.float32
    parts = [checkpoint(_target_logps, x, t, use_reentrant=False) if recompute else _target_logps(x, t)
             for x, t in zip(flat.split(rows), targets.split(rows))]
    return torch.cat(parts).view_as(labels) * mask, mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of response-token log-probs, number of response tokens) per sequence."""
    lp, mask = token_logps(logits, labels)
    return lp.sum(-1), mask.sum(-1)


def response_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """sequence_logps of a collated batch (learners.batching), running the LM head only where a
    label can be. `model` is an HF causal LM or a DeepSpeed engine wrapping one.

    One-pass batches are left-padded: every response ends in the last column, so the head runs
    on the last `logits_to_keep` columns (transformers' own argument, so model-specific logit
    scaling stays the model's) and prompt positions never reach it. Shared-prompt batches run
    the prefix common to all prompts once, each prompt's rest once against it, then the responses
    against their prompt's cached keys and values.
    """
    if "prompt_ids" in batch:
        return _shared_prompt_logps(model, batch)
    keep = batch["logits_to_keep"]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=keep, use_cache=False)
    return sequence_logps(out.logits, batch["labels"][:, -keep:])


def _shared_prompt_logps(model, b: dict) -> tuple[torch.Tensor, torch.Tensor]:
    cache = None
    if "prefix_ids" in b:  # the prefix every prompt shares, once; each prompt continues from a copy of it
        cache = model(input_ids=b["prefix_ids"], logits_to_keep=1, use_cache=True).past_key_values
        cache.batch_select_indices(torch.zeros(b["prompt_ids"].shape[0], dtype=torch.long,
                                               device=b["prompt_ids"].device))
    out = model(input_ids=b["prompt_ids"], attention_mask=b["prompt_mask"], position_ids=b["prompt_pos"],
                past_key_values=cache, logits_to_keep=1, use_cache=True)
    group = b["group"]
    # the prompt's last position predicts each response's first token
    first, _ = token_logps(out.logits[group], b["first_targets"][:, None])
    lp, n = first[:, 0], torch.ones_like(group)
    if b["input_ids"].shape[1] == 0:
        return lp, n
    cache = out.past_key_values
    cache.batch_select_indices(group)  # a copy of its prompt's keys and values per response; gradients flow back
    rest = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"],
                 past_key_values=cache, use_cache=True)
    lp_rest, n_rest = sequence_logps(rest.logits, b["labels"])
    return lp + lp_rest, n + n_rest


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over all response tokens in the batch."""
    lp, mask = token_logps(logits, labels)
    return -lp.sum() / mask.sum().clamp(min=1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float, chosen_nll: torch.Tensor | None = None,
             nll_coef: float = 0.0, label_smoothing: float = 0.0, loss_type: str = "sigmoid",
             normalizer: float | None = None) -> dict:
    """All inputs are per-pair tensors [B]; chosen_nll is the per-token-mean NLL per pair.

    The loss is the per-pair sum divided by `normalizer` (default B: the mean); data-parallel
    learners pass the global pair count so ranks with fewer pairs do not dilute the mean.
    Returns the total loss and its terms (detached, local means) for logging.
    """
    pi = policy_chosen - policy_rejected
    ref = ref_chosen - ref_rejected
    logits = pi - ref
    if loss_type == "sigmoid":
        # cDPO: with probability label_smoothing the preference label is flipped.
        pref = -(1 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits)
    elif loss_type == "ipo":
        pref = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {loss_type!r}")
    nll = chosen_nll if chosen_nll is not None else torch.zeros_like(pref)
    total = (pref + nll_coef * nll).sum() / (pref.numel() if normalizer is None else normalizer)
    pref, nll = pref.mean(), nll.mean()
    chosen_reward = beta * (policy_chosen - ref_chosen).detach()
    rejected_reward = beta * (policy_rejected - ref_rejected).detach()
    return {
        "loss": total,
        "pref_loss": pref.detach(),
        "nll_loss": nll.detach(),
        "chosen_logp": policy_chosen.detach().mean(),
        "rejected_logp": policy_rejected.detach().mean(),
        "reward_margin": (chosen_reward - rejected_reward).mean(),
        "pref_accuracy": (chosen_reward > rejected_reward).float().mean(),
    }
