"""Paired bootstrap differences and the eval's cut-off rule: pure functions on outcomes and records."""

from __future__ import annotations

import json
import math
import re
import random
import statistics
from pathlib import Path

import pytest

from core.records import Grade, GradedSample, Problem, Sample
from core.stats import eval_outcomes, judge_cut_offs, mean_and_sd, paired_difference, paired_table, stop_kind


def outcomes(n: int, p_before: float, p_after: float, seed: int) -> tuple[list[bool], list[bool]]:
    rng = random.Random(seed)
    return [rng.random() < p_before for _ in range(n)], [rng.random() < p_after for _ in range(n)]


@pytest.mark.parametrize("n,pb,pa,seed", [(200, 0.1, 0.3, 0), (200, 0.3, 0.3, 1), (50, 0.5, 0.2, 2), (400, 0.2, 0.25, 3)])
def test_paired_difference_agrees_with_its_definition_and_the_normal_approximation(n, pb, pa, seed):
    before, after = outcomes(n, pb, pa, seed)
    r = paired_difference(before, after)
    d = [int(a) - int(b) for b, a in zip(before, after)]
    assert r["n"] == n
    assert r["diff"] == pytest.approx(sum(after) / n - sum(before) / n)
    assert r["up"] == sum(x == 1 for x in d) and r["down"] == sum(x == -1 for x in d)
    lo, hi = r["ci95"]
    assert lo <= r["diff"] <= hi
    # The percentile bootstrap of a mean is close to mean +- 1.96 standard errors for n this size.
    se = statistics.pstdev(d) / math.sqrt(n)
    assert lo == pytest.approx(r["diff"] - 1.96 * se, abs=0.5 * se + 1e-9)
    assert hi == pytest.approx(r["diff"] + 1.96 * se, abs=0.5 * se + 1e-9)


def test_the_interval_narrows_with_more_problems():
    small = paired_difference(*outcomes(50, 0.2, 0.3, 5))
    large = paired_difference(*outcomes(800, 0.2, 0.3, 5))
    assert large["ci95"][1] - large["ci95"][0] < small["ci95"][1] - small["ci95"][0]


def test_no_change_has_a_zero_width_interval_and_no_moves():
    same = [True, False, True, True, False]
    assert paired_difference(same, same) == {"n": 5, "diff": 0.0, "ci95": [0.0, 0.0], "up": 0, "down": 0}


def test_all_fixed_is_a_certain_gain():
    r = paired_difference([False] * 7, [True] * 7)
    assert r["diff"] == 1.0 and r["ci95"] == [1.0, 1.0] and r["up"] == 7 and r["down"] == 0


def test_same_seed_same_interval_and_lengths_must_match():
    b, a = outcomes(100, 0.2, 0.4, 9)
    assert paired_difference(b, a, seed=3) == paired_difference(b, a, seed=3)
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference(b, a[:-1])
    assert paired_difference([], [])["diff"] is None


def test_paired_table_names_later_vs_earlier_and_pairs_by_problem_id():
    base = {"p1": False, "p2": False, "p3": True, "p4": True}
    rft = {"p4": True, "p3": False, "p2": True, "p1": True}  # other insertion order
    dpo = {"p1": True, "p2": True, "p3": True}  # p4 missing: compared on the three both have
    t = paired_table({"dpo": dpo, "base": base, "rft": rft})
    assert set(t) == {"rft_vs_base", "dpo_vs_base", "dpo_vs_rft"}
    ids = sorted(base)
    assert t["rft_vs_base"] == paired_difference([base[i] for i in ids], [rft[i] for i in ids])
    common = sorted(dpo)
    assert t["dpo_vs_rft"]["n"] == len(common)
    assert t["dpo_vs_rft"]["up"] == sum(dpo[i] and not rft[i] for i in common)


def test_mean_and_sd_match_the_statistics_module():
    xs = [0.125, 0.235, 0.3, 0.265]
    assert mean_and_sd(xs) == pytest.approx((statistics.mean(xs), statistics.stdev(xs)))
    assert mean_and_sd([0.2]) == (0.2, None)
    assert mean_and_sd([]) == (None, None)


# ------------------------------------------------------------------ cut-off responses in the eval


def graded(pid: str, text: str, finish: str, verdict: str, category: str = "level1") -> GradedSample:
    prob = Problem(pid, "q", answer="42", category=category)
    return GradedSample(Sample(prob, 0, text, finish_reason=finish), Grade(9.0 if verdict == "correct" else 2.0, verdict))


CASES = [  # (response, finish reason, rule verdict, counts as correct, cut off before an answer)
    ("6 * 7 = 42 and then 42", "length", "correct", False, True),  # last number of a cut-off text
    ("The answer is 42. Then I also", "length", "correct", True, False),  # stated before the cut
    ("so \\boxed{42} and more", "length", "correct", True, False),
    ("#### 42\nmore", "length", "correct", True, False),
    ("6 * 7 = 42", "stop", "correct", True, False),  # finished: its last number is its answer
    ("6 * 7 = 41", "length", "incorrect", False, True),
    ("no numbers at all", "length", "unknown", False, True),
    ("6 * 7 = 42", "", "correct", True, False),  # no finish reason recorded: graded as before
    ("so 6 * 7 = 42. " * 10, "length", "correct", False, True),  # stuck in a loop
]


@pytest.mark.parametrize("text,finish,verdict,right,cut", CASES)
def test_cut_off_responses_without_an_answer_count_as_wrong(text, finish, verdict, right, cut):
    g = graded("p", text, finish, verdict)
    (j,) = judge_cut_offs([g])
    assert (j.grade.verdict == "correct") is right
    assert ("cut off" in j.grade.reason) is cut
    assert g.grade.verdict == verdict  # the lineage record itself is not changed


def test_eval_outcomes_counts_cut_offs_and_accuracy():
    gs = [graded(f"p{i}", *c[:3], category=f"level{1 + i % 2}") for i, c in enumerate(CASES)]
    out = eval_outcomes(gs)
    assert out["n"] == len(CASES)
    assert out["accuracy"] == pytest.approx(sum(c[3] for c in CASES) / len(CASES))
    assert out["cut_off_unanswered"] == sum(c[4] for c in CASES)
    assert out["looping"] == pytest.approx(1 / len(CASES))  # the last case; the other cut-offs are the budget's
    assert out["truncated"] == pytest.approx((sum(c[1] == "length" for c in CASES) - 1) / len(CASES))
    assert out["correct"] == {f"p{i}": c[3] for i, c in enumerate(CASES)}
    for cat in ("level1", "level2"):
        rows = [c for i, c in enumerate(CASES) if f"level{1 + i % 2}" == cat]
        assert out["by_category"][cat] == pytest.approx(sum(c[3] for c in rows) / len(rows))


LOOP = "so 6 * 7 = 42. " * 10
RAMBLE = "First 3 + 4 = 7, then 7 + 2 = 9, then 9 + 5 = 14, then 14 + 8 = 22 and"
# (first response, its finish, recheck of it or None, expected stop kind)
STOPS = [
    ("The answer is 7.", "stop", None, "finished"),
    ("The answer is 7.", "stop", ("anything", "length"), "finished"),  # a finished response is never rechecked
    (RAMBLE, "length", None, "cut off"),  # unrechecked: a larger budget could let it finish
    (LOOP, "length", None, "looping"),
    (RAMBLE, "length", (RAMBLE + " 22 + 1 = 23. The answer is 23.", "stop"), "cut off"),  # more tokens finished it
    (RAMBLE, "length", (RAMBLE + " and then" * 40, "length"), "looping"),  # the recheck ends in a loop
    (LOOP, "length", (LOOP + "so 6", "length"), "looping"),
    (RAMBLE, "length", (RAMBLE + " 22 + 1 = 23, then 23 + 6 = 29, then", "length"), "runaway"),
    (LOOP, "length", (LOOP + " The answer is 42.", "stop"), "cut off"),  # a loop the budget broke off: it finished
]


@pytest.mark.parametrize("text,finish,longer,kind", STOPS)
def test_stop_kind_uses_the_recheck_when_there_is_one(text, finish, longer, kind):
    assert stop_kind(text, finish, longer) == kind


def test_eval_outcomes_takes_the_recheck_of_each_cut_off_by_problem():
    gs = [graded(f"p{i}", text, finish, "incorrect") for i, (text, finish, _, _) in enumerate(STOPS)]
    recheck = [graded(f"p{i}", *longer, "incorrect") for i, (_, _, longer, _) in enumerate(STOPS) if longer]
    out = eval_outcomes(gs, recheck)
    for kind, field in (("cut off", "truncated"), ("looping", "looping"), ("runaway", "runaway")):
        assert out[field] == pytest.approx(sum(k == kind for *_, k in STOPS) / len(STOPS)), field
    assert out["truncated"] + out["looping"] + out["runaway"] == pytest.approx(
        sum(f == "length" for _, f, _, _ in STOPS) / len(STOPS))


# ------------------------------------------------------------------ bench/efficacy.py's aggregation over seeds


def test_efficacy_aggregates_each_stage_over_seeds(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    from efficacy import aggregate

    rng = random.Random(4)
    summaries = {}
    for seed in (3, 1, 2):
        acc = {s: rng.random() for s in ("base", "rft", "dpo")}
        paired = {"dpo_vs_base": {"diff": acc["dpo"] - acc["base"], "ci95": [-0.1, 0.2]}}
        summaries[seed] = {"accuracy": acc, "paired": paired, "truncated": {s: 0.01 for s in acc}, "minutes": 30.0}
    out = aggregate(summaries)
    assert out["seeds"] == [1, 2, 3]
    for s in ("base", "rft", "dpo"):
        accs = [summaries[k]["accuracy"][s] for k in (1, 2, 3)]
        assert out["stages"][s]["accuracy_per_seed"] == accs
        assert out["stages"][s]["accuracy_mean"] == pytest.approx(statistics.mean(accs))
        assert out["stages"][s]["accuracy_sd"] == pytest.approx(statistics.stdev(accs))
    diffs = [summaries[k]["paired"]["dpo_vs_base"]["diff"] for k in (1, 2, 3)]
    assert out["paired"]["dpo_vs_base"]["diff_mean"] == pytest.approx(statistics.mean(diffs))
    assert set(out["paired"]) == {"dpo_vs_base"}


def test_efficacy_leaves_out_a_stage_that_a_seed_lacks(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    from efficacy import aggregate

    out = aggregate({0: {"accuracy": {"base": 0.1, "rft": 0.2}}, 1: {"accuracy": {"base": 0.2}}})
    assert set(out["stages"]) == {"base"} and out["paired"] == {}


def _repo(tmp_path) -> tuple[Path, str]:
    """A git repository holding a copy of the demo config, committed: (root, commit)."""
    import shutil
    import subprocess

    root = tmp_path / "repo"
    (root / "configs").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "configs" / "cpu-demo.yaml", root / "configs")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "demo config"]):
        subprocess.run(git + cmd, cwd=root, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    return root, head


def _published(tmp_path, head: str, **over) -> Path:
    s = {"config": "configs/cpu-demo.yaml", "commit": head, "accuracy": {"base": 0.1},
         "command": "python -m pipelines.self_critique --config configs/cpu-demo.yaml run.run_dir=/x/runs/cpu-demo"}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({**s, **over}))
    return path


@pytest.mark.parametrize("over, seed, overrides, why", [
    ({}, 1, [], "it ran seed 0, not 1"),
    ({"command": "python -m pipelines.self_critique --config configs/cpu-demo.yaml run.seed=2"}, 0, [],
     "it ran seed 2, not 0"),
    ({"config": "configs/other.yaml"}, 0, [], "it ran config 'configs/other.yaml'"),
    ({"command": "python -m pipelines.self_critique --config configs/cpu-demo.yaml rft.lr=1"}, 0, [],
     "it ran with overrides ['rft.lr=1']"),
    ({}, 0, ["eval.problems=10"], "would apply to the new seeds only"),
    ({"commit": "0" * 40}, 0, [], "is not in this repository"),
])
def test_efficacy_reuses_a_run_only_with_the_same_config_and_seed(monkeypatch, tmp_path, over, seed, overrides, why):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    from efficacy import reusable

    root, head = _repo(tmp_path)
    path = _published(tmp_path, head, **over)
    with pytest.raises(SystemExit, match=re.escape(why)):
        reusable(path, seed, "configs/cpu-demo.yaml", overrides, root)


def test_efficacy_refuses_a_run_whose_config_changed_since(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    from efficacy import reusable

    root, head = _repo(tmp_path)
    path = _published(tmp_path, head)
    assert reusable(path, 0, "configs/cpu-demo.yaml", [], root)["reused_from"] == str(path)
    cfg = root / "configs" / "cpu-demo.yaml"
    cfg.write_text(cfg.read_text().replace("keep_threshold: 7", "keep_threshold: 8"))  # not committed
    with pytest.raises(SystemExit, match="changed since its commit"):
        reusable(path, 0, "configs/cpu-demo.yaml", [], root)
