"""Round layout decisions (core/rounds.py): which problems and models each round uses."""

from __future__ import annotations

from itertools import product
from pathlib import Path

import pytest

from core.rounds import RoundError, critic_start, final_model, in_mix, problem_slices, round_dir


def test_round_one_keeps_the_single_run_layout():
    assert problem_slices(100, 10, 5, 1, "fresh") == (range(0, 10), range(10, 15))
    assert problem_slices(12, 10, 5, 1, "fresh") == (range(0, 10), range(0, 5))  # too few: DPO reuses the start


@pytest.mark.parametrize("r", [2, 3, 4])
def test_fresh_rounds_never_reuse_a_problem(r):
    used = set()
    for k in range(1, r + 1):
        rft, dpo = problem_slices(100, 10, 5, k, "fresh")
        assert len(rft) == 10 and len(dpo) == 5
        assert not (set(rft) | set(dpo)) & used
        assert not set(rft) & set(dpo)
        used |= set(rft) | set(dpo)


def test_all_mode_repeats_round_one():
    for r in range(1, 5):
        assert problem_slices(100, 10, 5, r, "all") == problem_slices(100, 10, 5, 1, "all")


def test_fresh_rounds_that_run_out_say_what_to_change():
    with pytest.raises(RoundError, match="data.train.limit to at least 30"):
        problem_slices(29, 10, 5, 2, "fresh")
    assert problem_slices(30, 10, 5, 2, "fresh") == (range(15, 25), range(25, 30))


@pytest.mark.parametrize("bad", [("fresh", 0), ("sometimes", 2)])
def test_bad_round_settings_are_errors(bad):
    mode, r = bad
    with pytest.raises(RoundError):
        problem_slices(100, 10, 5, r, mode)
    with pytest.raises(RoundError):
        critic_start("sometimes", 2, "m", "c")


@pytest.mark.parametrize("mode,r,prev_critic", list(product(["retrain", "continue"], [1, 2, 3], [None, "c"])))
def test_critic_start(mode, r, prev_critic):
    got = critic_start(mode, r, "model", prev_critic)
    expect_critic = mode == "continue" and r > 1 and prev_critic
    assert got == ("c" if expect_critic else "model")


def test_final_model_prefers_dpo_then_rft_then_start():
    s, rft, dpo = ("s", "base"), ("r", "rft"), ("d", "dpo")
    assert final_model({"base": s, "rft": rft, "dpo": dpo}, s) == dpo
    assert final_model({"base": s, "rft": rft}, s) == rft
    assert final_model({"base": s}, s) == s


def test_round_dirs():
    assert round_dir(Path("/r"), 1) == Path("/r") and round_dir(Path("/r"), 3) == Path("/r/round3")


def test_round_mix_takes_a_fixed_share_of_keys():
    keys = [f"round1/critique:p{i}#0" for i in range(2000)]
    assert all(in_mix(k, 1.0) for k in keys)
    quarter = [k for k in keys if in_mix(k, 0.25)]
    assert 400 < len(quarter) < 600  # about a quarter
    assert quarter == [k for k in keys if in_mix(k, 0.25)]  # the same subset every time (a resume)
    assert set(quarter) <= {k for k in keys if in_mix(k, 0.5)}  # a larger share keeps the smaller one's
