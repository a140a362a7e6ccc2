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
        "critic.max_new_tokens=40", "critic.lr=3e-3", "critic.epochs=4", "rft.problems=8", "rft.samples_per_prompt=3",
        "dpo.problems=8", "dpo.samples_per_prompt=3", "dpo.min_score_gap=0", "eval.problems=6", "eval.max_new_tokens=32",
        "train.micro_batch_size=4", "train.max_len=160", "train.checkpoint_every=2",
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


def test_pipeline_end_to_end_survives_driver_kill(warm_tiny_model, tmp_path, fault_log):
    run_dir = tmp_path / "run"
    cmd = _cmd(tiny_overrides(run_dir, warm_tiny_model))
    log1 = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    marker = run_dir / "rft" / "rollout" / "lineage.jsonl"
    deadline = time.time() + 900
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, f"pipeline ended before RFT training started: {(tmp_path / 'first.log').read_text()[-3000:]}"
    assert marker.exists(), "RFT never started"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver (and everything in its session) dies mid-RFT
    proc.wait()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["critic"]["status"] == "done"
    assert manifest["stages"]["rft"]["status"] == "running"

    second = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1500)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["critic"]["attempts"] == 1  # not redone
    assert manifest["stages"]["rft"]["attempts"] == 2  # resumed
    assert all(manifest["stages"][s]["status"] == "done" for s in ("critic", "rft", "dpo", "eval"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["accuracy"]) == {"base", "rft", "dpo"}
    for stage in summary["accuracy"]:  # each model answered every eval problem once
        ids = [json.loads(x)["sample"]["problem"]["id"]
               for x in (run_dir / "eval" / stage / "lineage.jsonl").read_text().splitlines()]
        assert len(ids) == len(set(ids)) == summary["n_eval"] > 0
    assert check(summary) == []  # the pipeline's own summary is what `./dev report --publish` accepts
    # every RFT prompt x sample graded exactly once across the two driver runs
    keys = [json.loads(x)["sample"]["problem"]["id"] + "#" + str(json.loads(x)["sample"]["sample_index"])
            for x in (run_dir / "rft" / "rollout" / "lineage.jsonl").read_text().splitlines()]
    from core.config import load_config
    from core.data import load_problems

    cfg = load_config(ROOT / "configs" / "cpu-demo.yaml", tiny_overrides(run_dir, warm_tiny_model))
    rft_problems = load_problems(cfg.data.train, cfg.data.on_bad_row)[0][: cfg.rft.problems]
    fault_log("driver killed mid-RFT", {f"{p.id}#{i}" for p in rft_problems for i in range(cfg.rft.samples_per_prompt)},
              {"graded": keys})
    assert len(keys) == len(set(keys)) == 8 * 3
    # the report and its plots
    report = (run_dir / "report.md").read_text()
    assert "| dpo |" in report and (run_dir / "plots" / "accuracy.png").exists()
    # the trained critic also judged the eval responses of all three stages
    assert 0 < summary["critic_on_eval"]["critic_n"] and "eval responses" in report
    # the offline W&B run holds the per-stage metrics
    runs = list((run_dir / "wandb").rglob("*.wandb"))
    assert runs, "no offline W&B run files"
    blob = b"".join(p.read_bytes() for p in runs)
    for key in (b"critic/train/loss", b"rft/train/loss", b"dpo/train/reward_margin", b"eval/accuracy_dpo",
                b"rft/buffer/depth", b"rft/sampler_tok_per_s", b"eval/critic_accuracy"):
        assert key in blob, key
