"""The β × λ sweep end to end on the tiny model: real local Ray, Ray Tune, vLLM, DeepSpeed.

The run directory already holds a finished RFT stage (its model: the warm tiny model), as a
sweep over a finished run finds it: what the sweep adds is what is tested, and the pipeline's
own stages are tested in test_pipeline.py. One 1×2 sweep (two values of λ: each trial costs a learner and an eval, and what is tested
does not need more), run twice. In the first run one trial cannot create its directory (a
file is in the way): it is reported as failed and the other finishes. The second run, after
the file is gone, reuses the pairs, skips the finished point, runs the failed one (with
W&B on, offline, to check the group) and publishes the result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from actors.journal import Journal
from pipelines.run_dir import RunDir
from pipelines.sweep import trial_name
from tests.integration.test_pipeline import ROOT, _env, tiny_overrides

pytestmark = pytest.mark.integration

GRID = ["--grid", "dpo.beta=[0.5]", "dpo.nll_coef=[0.5,1.5]"]
DPO_PROBLEMS, SAMPLES, EVAL = 8, 3, 4  # as tiny_overrides and the overrides below set them


def _sweep(overrides: list[str], *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines.sweep", "--config", "configs/cpu-demo.yaml", *overrides, *GRID, *extra]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1800)


def _rows(path: Path) -> list[dict]:
    return Journal.read(path)


def test_sweep_shares_pairs_reports_failures_and_resumes(warm_tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    sweep = run_dir / "sweep"
    # the critic stage is left out (the rule grades): the sweep's own parts are what is tested
    # the eval's cut-off recheck is test_pipeline's to check; here it would only double the eval
    over = tiny_overrides(run_dir, warm_tiny_model) + ["run.stages=[rft]", f"eval.problems={EVAL}",
                                                       "eval.recheck_cut_offs=false"]
    finished = RunDir(run_dir)
    finished.mark_started("rft")
    finished.mark_done("rft", warm_tiny_model, {"train_steps": 0})
    blocked = sweep / "trials" / trial_name(0.5, 1.5)
    blocked.parent.mkdir(parents=True)
    blocked.write_text("in the way of the trial's directory")

    first = _sweep(over + ["logging.wandb=false"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-5000:]
    res = json.loads((sweep / "sweep.json").read_text())
    by_name = {p["name"]: p for p in res["points"]}
    assert len(by_name) == 2 and res["rft_checkpoint"] == warm_tiny_model  # the finished stage, not rerun
    assert by_name[blocked.name]["status"] == "error" and by_name[blocked.name]["accuracy"] is None
    assert blocked.name in by_name[blocked.name]["error"]
    ok = [p for p in res["points"] if p["status"] == "ok"]
    assert len(ok) == 1 and all(0 <= p["accuracy"] <= 1 and p["n_eval"] == EVAL for p in ok)

    # the pairs were built once: every sample graded once, every pair scored once
    keys = [(r["sample"]["problem"]["id"], r["sample"]["sample_index"])
            for r in _rows(sweep / "pairs" / "lineage.jsonl")]
    assert len(keys) == len(set(keys)) == res["pair_samples"] == DPO_PROBLEMS * SAMPLES
    assert res["pairs"] > 0 and res["pairs_built"] == res["pairs"]
    for p in ok:
        trial = sweep / "trials" / p["name"]
        assert len(_rows(trial / "pairs" / "deliverables.jsonl")) == res["pairs"]
        assert _rows(trial / "pairs" / "lineage.jsonl") == []  # a trial samples nothing for training
        evals = _rows(trial / "eval" / "dpo" / "lineage.jsonl")  # its own weights answered the eval
        assert len(evals) == EVAL and {r["sample"]["policy_version"] for r in evals} == {f"sweep-{p['name']}"}
        assert (trial / "dpo" / "checkpoint" / "config.json").exists()
    table = [x for x in (sweep / "sweep.md").read_text().splitlines() if x.startswith("| ") and x[2].isdigit()]
    assert len(table) == 2 and sum("| ok |" in x for x in table) == 1
    assert (sweep / "heatmap.png").stat().st_size > 0

    blocked.unlink()
    dest = tmp_path / "published" / "sweep.json"
    second = _sweep(over + ["logging.wandb=true"], "--publish", str(dest))
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    res2 = json.loads((sweep / "sweep.json").read_text())
    assert [p["status"] for p in res2["points"]] == ["ok"] * 2
    assert (res2["pairs"], res2["pairs_built"], res2["pair_samples"]) == \
        (res["pairs"], res["pairs"], res["pair_samples"])  # nothing sampled or scored again
    assert len(_rows(sweep / "points.jsonl")) == 3  # 1 ok + 1 error, then only the failed point again
    assert dest.read_bytes() == (sweep / "sweep.json").read_bytes()
    # λ reached the learner: at step 1 (policy = reference) the losses differ only by λ·NLL
    first_loss = {p["name"]: _rows(sweep / "trials" / p["name"] / "dpo" / "train" / "dpo-learner-metrics.jsonl")[0]
                  ["loss"] for p in res2["points"]}
    assert first_loss[trial_name(0.5, 0.5)] < first_loss[trial_name(0.5, 1.5)]
    # W&B (offline): the trial and the sweep's summary are runs in one group
    for d in (blocked, sweep / "summary"):
        blob = b"".join(p.read_bytes() for p in d.rglob("*.wandb"))
        assert b"run-sweep" in blob, d
