"""Top-p (nucleus) masking without sorting the vocabulary, for vLLM's CPU sampler.

vLLM's CPU sampler finds each row's nucleus by sorting the whole vocabulary. For
SmolLM2 (49,152 tokens) and 128 sequences that sort took ~280 ms of a ~800 ms decode
step on this project's 2-core CI machine: top-p 0.95 ran at 157 tokens/s against 259 with
top-p off (bench/README.md). A nucleus is usually far smaller than the vocabulary, so a
`topk` of a few hundred holds it; rows whose nucleus is wider fall back to vLLM's own sort.

The kept set is vLLM's: a token stays when the probability mass of the tokens ranked
above it is below p (so the top token always stays). Only ties at the cut and float
rounding at the boundary can differ. Rows with p >= 1 lose only tokens of probability 0,
as in vLLM's version.

Loaded into every vLLM process (engine core and workers) as a vLLM general plugin
(entry point `vllm.general_plugins` in pyproject.toml), so it applies to any vLLM run in
an environment where this project is installed. It changes nothing on GPUs, where vLLM
samples with its own kernels. To run vLLM's own sort instead, set `VLLM_PLUGINS` to a
list that leaves out `selfcritique_cpu_top_p` (`VLLM_PLUGINS=none` loads no plugin);
bench/rollout.py does that to measure both.
"""

from __future__ import annotations

import logging

import torch

# Under vLLM's "vllm" logger, so its handler prints our lines with the process tag.
log = logging.getLogger("vllm.plugins.selfcritique_cpu_top_p")

# Candidate nucleus widths tried before the full sort. Each tier costs one topk over
# the rows still unresolved (256: ~16 ms for 128 rows here, against ~280 ms for the sort).
TIERS = (256, 4096)

# Threshold for rows without a nucleus cut: masks exactly the tokens of probability 0.
# Built once: probabilities here are always float32 (apply_top_p's softmax).
SMALLEST_POSITIVE = torch.nextafter(torch.tensor(0.0), torch.tensor(1.0))


def top_p_thresholds(probs: torch.Tensor, p: torch.Tensor, tiers=TIERS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the smallest probability inside the nucleus.

    Returns (thresholds, unresolved). Rows with p >= 1 get the smallest positive float, so
    only tokens of probability 0 go (as in vLLM's version). Rows in `unresolved` (indices)
    have a nucleus wider than the largest tier; their threshold is that same smallest float.
    """
    rows, vocab = probs.shape
    thresholds = SMALLEST_POSITIVE.to(probs.dtype).repeat(rows)
    pending = (p < 1).nonzero().squeeze(1)
    for k in tiers:
        if k >= vocab or pending.numel() == 0:
            break
        top = probs[pending].topk(k, dim=-1).values  # descending
        inclusive = top.cumsum(dim=-1)
        row_p = p[pending].to(probs.dtype)
        # Mass ranked strictly above each candidate; a token is kept while that is below p.
        kept = ((inclusive - top) < row_p.unsqueeze(1)).sum(dim=-1)
        # The cut lies inside the top k only if the top k already hold mass p.
        resolved = inclusive[:, -1] >= row_p
        cut = top.gather(1, (kept - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        thresholds[pending[resolved]] = cut[resolved]
        pending = pending[~resolved]
    return thresholds, pending


def apply_top_p(logits: torch.Tensor, p: torch.Tensor, sort_fallback) -> torch.Tensor:
    """Mask (in place) each row's logits outside its top-p nucleus with -inf.

    `sort_fallback(logits_rows, p_rows)` handles rows whose nucleus is wider than every tier.
    """
    probs = logits.softmax(dim=-1, dtype=torch.float32)
    thresholds, unresolved = top_p_thresholds(probs, p)
    logits.masked_fill_(probs < thresholds.unsqueeze(1), float("-inf"))
    if unresolved.numel():
        logits[unresolved] = sort_fallback(logits[unresolved], p[unresolved])
    return logits


def register() -> None:
    """vLLM general-plugin hook: swap the CPU sampler's top-k/top-p function for one that
    handles the top-p-only case with `apply_top_p`. Safe to call more than once."""
    try:
        from vllm.platforms import current_platform
        from vllm.v1.sample.ops import topk_topp_sampler as sampler_ops
    except ImportError as e:  # a vLLM without this module: keep its own sampler
        log.warning("fast CPU top-p not installed (vLLM layout changed: %s)", e)
        return
    if not current_platform.is_cpu() or getattr(sampler_ops, "HAS_TRITON", False):
        return
    original = sampler_ops.apply_top_k_top_p
    if getattr(original, "_selfcritique_top_p", False):
        return

    def sort_fallback(logits, p):
        return sampler_ops.apply_top_k_top_p_pytorch(logits, None, p, allow_cpu_sync=True)

    def apply_top_k_top_p(logits, k, p):
        if p is None or k is not None:  # top-k (alone or with top-p) stays with vLLM
            return original(logits, k, p)
        return apply_top_p(logits, p, sort_fallback)

    apply_top_k_top_p._selfcritique_top_p = True
    sampler_ops.apply_top_k_top_p = apply_top_k_top_p
    log.info("top-p without a vocabulary sort installed")
