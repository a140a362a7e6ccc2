"""The sort-free top-p keeps exactly the tokens vLLM's own sort-based version keeps."""

from __future__ import annotations

import pytest
import torch
from vllm.v1.sample.ops import topk_topp_sampler

from actors.vllm_cpu_top_p import apply_top_p, top_p_thresholds


def vllm_top_p(logits, p):
    return topk_topp_sampler.apply_top_k_top_p_pytorch(logits, None, p, allow_cpu_sync=True)


def logits_batch(rows: int, vocab: int, seed: int) -> torch.Tensor:
    """Rows from very flat (nucleus of thousands, past every tier) to very peaked."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1.7, rows).unsqueeze(1)
    return torch.randn(rows, vocab, generator=g) * scales


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_kept_tokens_as_vllm(seed):
    logits = logits_batch(96, 8192, seed)
    p = torch.rand(96, generator=torch.Generator().manual_seed(seed)) * 0.98 + 0.01
    p[::7] = 1.0  # requests without top-p share the batch
    expected = vllm_top_p(logits.clone(), p)
    got = apply_top_p(logits.clone(), p, vllm_top_p)
    assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
    assert torch.equal(got[torch.isfinite(got)], logits[torch.isfinite(expected)])


def test_tiers_resolve_peaked_rows_and_leave_wide_ones_to_the_sort():
    logits = logits_batch(64, 8192, 5)
    probs = logits.softmax(-1)
    p = torch.full((64,), 0.9)
    _, unresolved = top_p_thresholds(probs, p, tiers=(16,))
    widths = (vllm_top_p(logits.clone(), p).isfinite()).sum(-1)
    # a row is left for the sort exactly when its nucleus is wider than the tier
    assert sorted(unresolved.tolist()) == [i for i in range(64) if widths[i] > 16]
    assert 0 < len(unresolved) < 64  # both paths exercised


def test_top_token_always_kept_and_p_one_untouched():
    logits = torch.tensor([[10.0, 0.0, -1.0, -2.0], [0.5, 0.4, 0.3, 0.2]])
    got = apply_top_p(logits.clone(), torch.tensor([0.01, 1.0]), vllm_top_p)
    assert torch.isfinite(got[0]).tolist() == [True, False, False, False]
    assert torch.equal(got[1], logits[1])


def test_registered_as_a_vllm_plugin_and_installed_by_it():
    """vLLM's engine processes load `vllm.general_plugins` entry points; loading ours swaps the CPU sampler's function."""
    from importlib.metadata import entry_points

    ours = [ep for ep in entry_points(group="vllm.general_plugins") if ep.value.startswith("actors.vllm_cpu_top_p")]
    assert len(ours) == 1, "reinstall the project (pip install -e .) so its entry points are registered"
    before = topk_topp_sampler.apply_top_k_top_p
    try:
        ours[0].load()()
        patched = topk_topp_sampler.apply_top_k_top_p
        assert patched is not before or getattr(before, "_selfcritique_top_p", False)
        logits = logits_batch(8, 4096, 9)
        p = torch.full((8,), 0.8)
        assert torch.equal(patched(logits.clone(), None, p).isfinite(), vllm_top_p(logits.clone(), p).isfinite())
    finally:
        topk_topp_sampler.apply_top_k_top_p = before
