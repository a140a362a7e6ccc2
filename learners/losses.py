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

IGNORE = -100


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-prob of each label (0 where masked) and the mask itself.

    logits: [B, T, V] for positions 0..T-1; labels: [B, T] already aligned (labels[t]
    is the token predicted at position t).
    """
    mask = labels != IGNORE
    safe = labels.masked_fill(~mask, 0)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of response-token log-probs, number of response tokens) per sequence."""
    lp, mask = token_logps(logits, labels)
    return lp.sum(-1), mask.sum(-1)


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over all response tokens in the batch."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float, chosen_nll: torch.Tensor | None = None,
             nll_coef: float = 0.0, label_smoothing: float = 0.0, loss_type: str = "sigmoid") -> dict:
    """All inputs are per-pair tensors [B]; chosen_nll is the per-token-mean NLL per pair.

    Returns the total loss and its terms (detached) for logging.
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
    pref = pref.mean()
    nll = chosen_nll.mean() if chosen_nll is not None else torch.zeros((), device=pref.device)
    total = pref + nll_coef * nll
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
