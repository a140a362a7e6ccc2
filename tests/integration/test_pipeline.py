"""The whole pipeline end to end on a tiny model: critic -> rft -> dpo -> eval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.results import check

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def tiny_overrides(run_dir: Path, tiny_model: str) -> list[str]:
    """The smallest run that still exercises every stage: CI time goes to starting engines and
    learners, so sizes are cut to what each assertion needs. The critic's quality is not tested
    here, and a tiny critic that passes the gate by luck would score every sample alike and leave
    DPO no pairs, so the rule grades where a reference answer exists (rule_else_model); critic
    selection itself is tested in test_critic_selection.py with judges whose verdicts are known."""
    return [
        f"run.run_dir={run_dir}", f"model.name={tiny_model}", "model.max_model_len=384",
        # levels 1-2: the problems the warm tiny model memorised (the demo profile also has level 3)
        "data.train.limit=40", "data.test.limit=12", "data.train.levels=[1,2]", "data.test.levels=[1,2]", "sampling.max_new_tokens=32", "sampling.batch_prompts=4",
        "critic.bootstrap_problems=8", "critic.bootstrap_samples=2", "critic.on_gate_fail=use_rule",
        "critic.policy=rule_else_model",
        "critic.heldout_min_per_class=4",
        # a tiny critic needs a high learning rate to learn the critique template in seconds
        "critic.max_new_tokens=40", "critic.lr=3e-3", "critic.epochs=2", "rft.problems=8", "rft.samples_per_prompt=3",
        "dpo.problems=8", "dpo.samples_per_prompt=3", "dpo.min_score_gap=0", "eval.problems=6", "eval.max_new_tokens=32",
        # a few Ray Train checkpoints (each a DeepSpeed save and a report); resuming from one is test_learner.py's
        "train.micro_batch_size=4", "train.max_len=160", "train.checkpoint_every=8",
        "resources.samplers.kv_cache_gib=1", "resources.critics.kv_cache_gib=1",
        f"eval.mathusereval_path={ROOT.parent / 'shared/data/mathusereval/math-user-eval.jsonl'}",
        "eval.mathusereval_limit=2",
    ]


def _cmd(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "pipelines.self_critique", "--config", "configs/cpu-demo.yaml", *overrides]


def _env() -> dict:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(ROOT))
    env.pop("WANDB_API_KEY", None)
    return env


def _attempts(manifest_path: Path) -> dict:
    return {s: (e["status"], e.get("attempts")) for s, e in json.loads(manifest_path.read_text())["stages"].items()}


def _kill_when(proc, marker: Path, log: Path) -> None:
    deadline = time.time() + 1200
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, f"pipeline ended before {marker} appeared: {log.read_text()[-3000:]}"
    assert marker.exists(), f"{marker} never appeared"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver (and everything in its session) dies
    proc.wait()


@pytest.mark.timeout(1800)  # two rounds and a rerun: about 15 minutes beside another worker
def test_two_rounds_end_to_end_survive_a_driver_kill_in_round_two(warm_tiny_model, tmp_path, fault_log):
    """Two self-critique rounds; the driver dies mid-RFT of round 2. The rerun resumes round 2
    without redoing round 1, and round 2's critic is trained from round 1's DPO model."""
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, warm_tiny_model) + ["run.rounds=2"]
    cmd = _cmd(overrides)
    log1 = tmp_path / "first.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=open(log1, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    _kill_when(proc, run_dir / "round2" / "rft" / "rollout" / "lineage.jsonl", log1)
    assert all(st == ("done", 1) for st in _attempts(run_dir / "manifest.json").values())
    r2 = _attempts(run_dir / "round2" / "manifest.json")
    assert r2["critic"] == ("done", 1) and r2["rft"] == ("running", 1)

    second = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1500)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    assert all(st == ("done", 1) for st in _attempts(run_dir / "manifest.json").values())  # round 1 not redone
    r2 = _attempts(run_dir / "round2" / "manifest.json")
    assert r2 == {"critic": ("done", 1), "rft": ("done", 2), "dpo": ("done", 1), "eval": ("done", 1)}
    _check_round_one(run_dir)
    _check_round_two_lineage(run_dir)
    _check_round_two_rft_once(run_dir, overrides, warm_tiny_model, fault_log)
    rounds = json.loads((run_dir / "rounds.json").read_text())
    assert [r["round"] for r in rounds["rounds"]] == [1, 2]
    for r in rounds["rounds"]:
        lo, hi = r["ci95"]
        assert lo <= r["accuracy"] <= hi and "critic_balanced_accuracy" in r
    assert (run_dir / "plots" / "rounds.png").exists()
    _check_wandb(run_dir)


def _check_round_one(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["accuracy"]) == {"base", "rft", "dpo"}
    for stage in summary["accuracy"]:  # each model answered every eval problem once
        ids = [json.loads(x)["sample"]["problem"]["id"]
               for x in (run_dir / "eval" / stage / "lineage.jsonl").read_text().splitlines()]
        assert len(ids) == len(set(ids)) == summary["n_eval"] > 0
        _check_recheck(run_dir / "eval", stage, summary)
    assert check(summary) == []  # the pipeline's own summary is what `./dev report --publish` accepts
    report = (run_dir / "report.md").read_text()
    assert "| dpo |" in report and (run_dir / "plots" / "accuracy.png").exists()
    # the trained critic also judged the eval responses of all three stages
    assert 0 < summary["critic_on_eval"]["critic_n"] and "eval responses" in report


def _check_recheck(eval_dir: Path, stage: str, summary: dict) -> None:
    """Exactly the cut-off responses were generated again, with twice the budget, and every
    cut-off is classified once: by the budget, a loop, or a runaway."""
    first = [json.loads(x)["sample"] for x in (eval_dir / stage / "lineage.jsonl").read_text().splitlines()]
    cut = {s["problem"]["id"] for s in first if s["finish_reason"] == "length"}
    again_path = eval_dir / f"{stage}-recheck" / "deliverables.jsonl"  # the lineage keeps no token ids
    again = [json.loads(x)["item"]["sample"] for x in again_path.read_text().splitlines()] if again_path.exists() else []
    assert sorted(s["problem"]["id"] for s in again) == sorted(cut)
    budget = summary["eval_max_new_tokens"]
    assert summary["recheck_max_new_tokens"] == 2 * budget
    assert all(len(s["token_ids"]) > budget or s["finish_reason"] != "length" for s in again)
    shares = sum(summary[k][stage] for k in ("truncated", "looping", "runaway"))
    assert shares == pytest.approx(len(cut) / len(first))


def _check_round_two_lineage(run_dir: Path) -> None:
    r1 = json.loads((run_dir / "manifest.json").read_text())["stages"]
    r2 = json.loads((run_dir / "round2" / "manifest.json").read_text())
    dpo1 = r1["dpo"]["checkpoint"]
    crit = r2["stages"]["critic"]["metrics"]
    assert r2["round"]["starts_from"] == dpo1
    assert crit["critique_samples_from"] == dpo1 and crit["critic_init_model"] == dpo1  # run.round_critic=retrain
    assert crit["earlier_round_critiques"] > 0  # round 1's critiques mixed in
    versions = {json.loads(x)["sample"]["policy_version"]
                for x in (run_dir / "round2" / "critic" / "rollout" / "lineage.jsonl").read_text().splitlines()}
    assert versions == {"dpo"}  # round 2's critique data was sampled from round 1's DPO model
    assert r2["stages"]["rft"]["checkpoint"].startswith(str(run_dir / "round2"))
    summary2 = json.loads((run_dir / "round2" / "summary.json").read_text())
    assert set(summary2["accuracy"]) == {"rft", "dpo"} and summary2["n_eval"] > 0


def _check_round_two_rft_once(run_dir: Path, overrides: list[str], model: str, fault_log) -> None:
    """Every round-2 RFT prompt x sample graded exactly once across the two driver runs."""
    from core.config import load_config
    from core.data import load_problems
    from core.rounds import problem_slices

    rows = [json.loads(x) for x in (run_dir / "round2" / "rft" / "rollout" / "lineage.jsonl").read_text().splitlines()]
    keys = [r["sample"]["problem"]["id"] + "#" + str(r["sample"]["sample_index"]) for r in rows]
    cfg = load_config(ROOT / "configs" / "cpu-demo.yaml", overrides)
    train = load_problems(cfg.data.train, cfg.data.on_bad_row)[0]
    rft_idx, _ = problem_slices(len(train), cfg.rft.problems, cfg.dpo.problems, 2, cfg.run.round_problems)
    expected = {f"{train[i].id}#{k}" for i in rft_idx for k in range(cfg.rft.samples_per_prompt)}
    fault_log("driver killed mid-RFT", expected, {"graded": keys}, round=2)
    assert len(keys) == len(set(keys)) == len(expected)


def _check_wandb(run_dir: Path) -> None:
    """The offline W&B run holds the per-stage metrics of both rounds."""
    runs = list((run_dir / "wandb").rglob("*.wandb"))
    assert runs, "no offline W&B run files"
    blob = b"".join(p.read_bytes() for p in runs)
    for key in (b"critic/train/loss", b"rft/train/loss", b"dpo/train/reward_margin", b"eval/accuracy_dpo",
                b"rft/buffer/depth", b"rft/sampler_tok_per_s", b"eval/critic_accuracy", b"round2/rft/train/loss",
                b"round2/eval/accuracy_dpo"):
        assert key in blob, key
