"""Ray Train + DeepSpeed learners on a tiny model, fed from the real buffer actor."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray

from actors.buffer import Buffer
from core.records import Pair, Problem, SFTExample
from learners.trainer import LearnJob, run_learner

pytestmark = pytest.mark.integration

MSG = lambda q: [{"role": "user", "content": q}]  # noqa: E731


def sft_items(n: int) -> list[SFTExample]:
    return [SFTExample(f"ex{i}", MSG(f"What is {i} plus 1?"), f"{i} + 1 = {i + 1}. The answer is {i + 1}.")
            for i in range(n)]


def fill(buf, items) -> None:
    ray.get(buf.put_items.remote([ray.put(x) for x in items]))
    ray.get(buf.close.remote())


def job(tmp_path: Path, model: str, buf, **kw) -> LearnJob:
    base = dict(name="job", kind="sft", model_path=model, out_dir=str(tmp_path / "hf"),
                storage_dir=str(tmp_path / "state"), buffer=buf, lr=1e-3, micro_batch_size=4,
                checkpoint_every=1000, max_failures=0, warmup_steps=0, num_workers=1, cpus_per_worker=1,
                bf16=True)
    base.update(kw)
    return LearnJob(**base)


def metrics(j: LearnJob) -> list[dict]:
    return [json.loads(x) for x in j.metrics_path.read_text().splitlines()]


def _pairs(n: int) -> list[Pair]:
    out = []
    for i in range(n):
        p = Problem(f"q{i}", f"What is {i} plus 2?", answer=str(i + 2))
        out.append(Pair(p, MSG(p.question), f"The answer is {i + 2}.", f"No idea, maybe {i + 7}?", 9, 2,
                        f"q{i}#0", f"q{i}#1"))
    return out


def test_dpo_raises_margin_and_cached_reference_equals_the_live_one(ray_local, tiny_model, tmp_path):
    """Reference log-probs computed once (ReferenceScorer) equal a frozen reference model's at
    every step (ref_mode=per_step trains on the live ones and records the largest gap; training
    on the cached ones, the default, runs in the dilution test below and in test_pipeline.py)."""
    from learners.ref_scorer import ReferenceScorer

    scorer = ray.remote(ReferenceScorer).options(num_cpus=0).remote(tiny_model, 128)
    pairs = ray.get(scorer.enrich.remote(_pairs(16)))
    assert all(p.ref_chosen_logp is not None for p in pairs)
    buf = Buffer.remote(str(tmp_path / "buf"), capacity=1000)
    fill(buf, pairs)
    j = job(tmp_path, tiny_model, buf, kind="dpo", epochs=8, lr=1e-3, beta=0.5, nll_coef=1.0, ref_mode="per_step")
    run_learner(j)
    m = metrics(j)
    assert len(m) == 8 * 16 // 4
    early = sum(r["reward_margin"] for r in m[:4]) / 4
    late = sum(r["reward_margin"] for r in m[-4:]) / 4
    assert late > early + 0.5, (early, late)
    assert m[-1]["pref_accuracy"] >= 0.75
    diffs = [r["ref_cache_max_abs_diff"] for r in m]
    assert len(diffs) == len(m) and max(diffs) < 0.05 * max(abs(p.ref_chosen_logp) for p in pairs), diffs


def test_sft_waits_for_the_rollout_survives_a_killed_worker_lowers_loss_and_checkpoint_loads(
        ray_local, tiny_model, tmp_path, fault_log):
    """train.overlap_rollout=false (the 2-core demo): no step while the buffer is still open. Once
    it closes, two ranks train; rank 1's process is SIGKILLed a few steps past a checkpoint, and Ray
    Train restarts the group from it. Every item is trained exactly once, the loss falls, and the
    HF checkpoint loads in transformers and generates. (One learner run for all of it: each costs
    a Ray Train start.)"""
    buf = Buffer.remote(str(tmp_path / "buf"), capacity=1000)
    items = sft_items(96)
    ray.get(buf.put_items.remote([ray.put(x) for x in items]))  # data there, rollout not finished
    j = job(tmp_path, tiny_model, buf, micro_batch_size=2, num_workers=2, checkpoint_every=3, max_failures=2,
            epochs=1, overlap_rollout=False)
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("summary", run_learner(j)))
    t.start()
    workers = Path(j.storage_dir) / f"{j.name}-workers.jsonl"
    deadline = time.time() + 300
    while not workers.exists() and time.time() < deadline:
        time.sleep(0.5)
    assert workers.exists(), "the learner worker never started"
    time.sleep(5)
    assert ray.get(buf.stats.remote())["acked"] == 0, "trained while the rollout was still open"
    ray.get(buf.close.remote())
    killed = _kill_rank1_past_a_checkpoint(j, workers)
    t.join(timeout=900)
    summary = out["summary"]
    assert killed, "the worker was never killed"
    starts = [json.loads(x) for x in workers.read_text().splitlines()]
    assert any(s["resumed_at"] > 0 for s in starts)  # restarted from a checkpoint, not from scratch
    assert summary["micro"] == 96 // (2 * 2)
    acked = ray.get(buf.acked_keys.remote())
    fault_log("learner worker killed", {x.key for x in items},
              {"consumed": fault_log.acked(tmp_path / "buf" / "acks.jsonl")}, micro_steps=summary["micro"])
    assert sorted(acked) == sorted(x.key for x in items)  # each item trained exactly once, none skipped
    assert max(acked.values()) <= summary["micro"]
    m = metrics(j)
    first, last = m[0]["loss"], sum(r["loss"] for r in m[-3:]) / 3
    assert last < first * 0.8, (first, last)
    _generates(j.out_dir)


def _kill_rank1_past_a_checkpoint(j: LearnJob, workers: Path) -> dict:
    """SIGKILL rank 1 once Ray Train has registered a checkpoint and training is a few steps past it."""
    killed: dict = {}
    deadline = time.time() + 600
    while time.time() < deadline and not killed:
        try:
            steps = [r["step"] for r in metrics(j)]
        except FileNotFoundError:
            steps = []
        snap = Path(j.storage_dir) / j.name / "checkpoint_manager_snapshot.json"
        if steps and max(steps) >= 5 and snap.exists() and '"latest_checkpoint_result":{' in snap.read_text():
            rank1 = [json.loads(x) for x in workers.read_text().splitlines() if '"rank": 1' in x][-1]
            os.kill(rank1["pid"], signal.SIGKILL)  # a real worker process death mid-training
            killed["step"] = max(steps)
        time.sleep(0.2)
    return killed


def _generates(checkpoint: str) -> None:
    """The HF checkpoint loads in transformers and generates (its swap into a running vLLM engine:
    test_rollout.py)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    ids = tok.apply_chat_template(MSG("What is 3 plus 1?"), add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    out_ids = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out_ids.shape[1] > ids["input_ids"].shape[1]


def _placeholder_only_step_loop(cfg: dict) -> None:
    """Two real DeepSpeed ranks: a step where only rank 0 has data, then one where no rank has any."""
    import ray.train

    from learners.trainer import LearnerWorker, LearnJob, _allreduce, loss_units

    ctx = ray.train.get_context()
    w = LearnerWorker(LearnJob(**{k: v for k, v in cfg.items() if k != "out"}), ctx.get_world_rank(),
                      ctx.get_world_size())
    batch = w.batch(sft_items(4)) if w.rank == 0 else None
    n_global, _ = _allreduce([loss_units(batch, w.job) if batch else 0, 0.0], w.engine.device)
    w.step(batch, n_global)  # AdamW now has momentum; weight decay is on
    before = [p.detach().clone() for p in w.engine.module.parameters()]
    lr, steps = w.engine.get_lr()[0], w.engine.global_steps
    returned = w.step(None, 0.0)  # the placeholder-only step
    change = max(float((p.detach() - b).abs().max()) for p, b in zip(w.engine.module.parameters(), before))
    Path(cfg["out"], f"rank{w.rank}.json").write_text(json.dumps(
        {"change": change, "lr_same": w.engine.get_lr()[0] == lr, "steps_same": w.engine.global_steps == steps,
         "returned": returned, "first_step_moved": steps > 0}))


def test_placeholder_only_step_moves_no_weight(ray_local, tiny_model, tmp_path):
    from dataclasses import asdict

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    from learners.ray_trainer import BufferFedTorchTrainer

    j = job(tmp_path, tiny_model, None, weight_decay=0.1, warmup_steps=3, num_workers=2)
    (tmp_path / "out").mkdir()
    BufferFedTorchTrainer(_placeholder_only_step_loop, train_loop_config=asdict(j) | {"out": str(tmp_path / "out")},
                 scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                 torch_config=TorchConfig(backend="gloo"),
                 run_config=RunConfig(name="noop", storage_path=str(tmp_path / "rt"))).fit()
    for rank in (0, 1):
        r = json.loads((tmp_path / "out" / f"rank{rank}.json").read_text())
        assert r["first_step_moved"] and r["returned"] is None
        assert r["change"] == 0.0 and r["lr_same"] and r["steps_same"], r


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_a_rank_without_data_does_not_dilute_the_mean(ray_local, tiny_model, tmp_path, kind):
    """12 items: two ranks of 4 (ZeRO-2; the second step: one rank holds all 4, the other
    nothing) train the same weights as one rank of 8, which sees the same two global batches.

    Found by this test: ranks on different batch layouts (shared prefix against the placeholder's
    one row) had ZeRO add one weight's gradient to another's (trainer.same_graph_not_needed).
    Under gradient clipping and Adam a uniformly rescaled step barely moves the weights, so the
    normaliser itself is tested on its own in tests/unit/test_trainer_decisions.py."""
    from safetensors.torch import load_file

    weights = []
    for workers, micro in ((2, 4), (1, 8)):
        d = tmp_path / f"w{workers}"
        buf = Buffer.remote(str(d / "buf"), capacity=1000)
        items = sft_items(12) if kind == "sft" else _pairs(12)
        for p in items if kind == "dpo" else []:
            p.ref_chosen_logp, p.ref_rejected_logp = -20.0, -25.0
        fill(buf, items)
        j = job(d, tiny_model, buf, kind=kind, num_workers=workers, micro_batch_size=micro, epochs=1, lr=1e-3)
        assert run_learner(j)["micro"] == 2
        weights.append(load_file(str(Path(j.out_dir) / "model.safetensors")))
    start = load_file(str(Path(tiny_model) / "model.safetensors"))
    for name, a in weights[0].items():
        b, s = weights[1][name], start[name].float()
        moved = (b - s).abs().max()
        assert moved > 0, name
        # any gradient routed to the wrong weight, or a step taken twice, moves a weight by ~2·lr
        assert (a - b).abs().max() < 0.02 * moved, (name, float((a - b).abs().max()), float(moved))
