"""One learner for three jobs: critic SFT, RFT (SFT on kept samples) and DPO.

Ray Train's TorchTrainer runs `train_loop` on every worker; each worker builds a
DeepSpeed engine and pulls disjoint batches from the buffer actor. The first epoch
streams from the buffer (training starts with the first batch); later epochs replay
what this rank consumed, in a seeded shuffle.

Exactly-once: a batch is acked with the micro-step that trained it. Checkpoints hold
the DeepSpeed state, this rank's position and its replay list; on restore the worker
calls `buffer.rewind(consumer, step)`, which re-queues what it took after the
checkpoint, so nothing is trained twice or skipped relative to the restored model.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

PLACEHOLDER_MESSAGES = [{"role": "user", "content": "1"}]


@dataclass
class LearnJob:
    name: str  # also the Ray Train run name: rerunning the same job resumes it
    kind: Literal["sft", "dpo"]
    model_path: str
    out_dir: str  # final HF checkpoint
    storage_dir: str  # Ray Train storage (resumable state)
    buffer: Any  # the Buffer actor handle
    lr: float
    epochs: int = 1
    micro_batch_size: int = 4
    grad_accum: int = 1
    zero_stage: int = 2
    bf16: bool = True
    gradient_checkpointing: bool = False
    max_len: int = 384
    warmup_steps: int = 2
    weight_decay: float = 0.0
    checkpoint_every: int = 20
    max_failures: int = 2
    beta: float = 0.5
    nll_coef: float = 1.0
    label_smoothing: float = 0.0
    dpo_loss: str = "sigmoid"
    ref_mode: Literal["cached", "per_step"] = "cached"
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    threads_per_worker: int | None = None
    gpus_per_worker: float = 0.0
    resources_per_worker: dict = field(default_factory=dict)
    seed: int = 0
    max_steps: int | None = None  # stop after this many micro-steps (benchmarks)
    take_timeout_s: float = 5.0
    overlap_rollout: bool = True  # False: start once the rollout has closed the buffer

    @property
    def metrics_path(self) -> Path:
        return Path(self.storage_dir) / f"{self.name}-metrics.jsonl"


# ------------------------------------------------------------------------ worker side


def _allreduce(values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def _forward_sft(engine, tok, items, job):
    from learners.batching import collate, encode, pad_id
    from learners.losses import sft_loss

    enc = [encode(tok, it.messages, it.response, job.max_len) for it in items]
    b = collate(enc, pad_id(tok))
    dev = engine.device
    logits = engine(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev)).logits
    loss = sft_loss(logits, b["labels"].to(dev))
    return loss, {"loss": float(loss.detach())}, int((b["labels"] != -100).sum())


def _forward_dpo(engine, tok, items, job, ref_model=None):
    import torch

    from learners.batching import collate, encode, pad_id
    from learners.losses import dpo_loss, sequence_logps

    n = len(items)
    enc = [encode(tok, p.messages, p.chosen, job.max_len) for p in items] + \
          [encode(tok, p.messages, p.rejected, job.max_len) for p in items]
    b = collate(enc, pad_id(tok))
    dev = engine.device
    ids, attn, labels = b["input_ids"].to(dev), b["attention_mask"].to(dev), b["labels"].to(dev)
    logits = engine(input_ids=ids, attention_mask=attn).logits
    lp, ntok = sequence_logps(logits, labels)
    extra = {}
    if job.ref_mode == "per_step":
        with torch.no_grad():
            ref_lp, _ = sequence_logps(ref_model(input_ids=ids, attention_mask=attn).logits, labels)
        ref_c, ref_r = ref_lp[:n], ref_lp[n:]
        cached = [p.ref_chosen_logp for p in items] + [p.ref_rejected_logp for p in items]
        if all(c is not None for c in cached):
            extra["ref_cache_max_abs_diff"] = float((torch.tensor(cached, device=dev) - ref_lp.float()).abs().max())
    else:
        ref_c = torch.tensor([p.ref_chosen_logp for p in items], device=dev)
        ref_r = torch.tensor([p.ref_rejected_logp for p in items], device=dev)
    chosen_nll = -lp[:n] / ntok[:n].clamp(min=1)
    out = dpo_loss(lp[:n], lp[n:], ref_c, ref_r, beta=job.beta, chosen_nll=chosen_nll, nll_coef=job.nll_coef,
                   label_smoothing=job.label_smoothing, loss_type=job.dpo_loss)
    metrics = {k: float(v) for k, v in out.items()} | extra
    return out["loss"], metrics, int(ntok.sum())


def _placeholder(job):
    from core.records import Pair, Problem, SFTExample

    if job.kind == "sft":
        return [SFTExample("placeholder", PLACEHOLDER_MESSAGES, "1")]
    p = Problem("placeholder", "1")
    return [Pair(p, PLACEHOLDER_MESSAGES, "1", "2", 1, 0, "a", "b", 0.0, 0.0)]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def train_loop(cfg: dict) -> None:
    import ray
    import ray.train
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.records import from_json, to_json
    from learners import ds_engine

    job = LearnJob(**cfg)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(job.seed + rank)
    if job.threads_per_worker:
        torch.set_num_threads(job.threads_per_worker)
    bf16 = job.bf16 and ds_engine.bf16_supported()
    tok = AutoTokenizer.from_pretrained(job.model_path)
    model = AutoModelForCausalLM.from_pretrained(job.model_path, dtype=torch.float32)
    if job.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    conf = ds_engine.ds_config(micro_batch_size=job.micro_batch_size, grad_accum=job.grad_accum, world_size=world,
                               zero_stage=job.zero_stage, bf16=bf16)
    engine = ds_engine.init_engine(model, conf, job.lr, job.warmup_steps, job.weight_decay)
    ref_model = None
    if job.kind == "dpo" and job.ref_mode == "per_step":
        ref_model = AutoModelForCausalLM.from_pretrained(
            job.model_path, dtype=torch.bfloat16 if bf16 else torch.float32).eval().to(engine.device)
        ref_model.requires_grad_(False)

    consumer = f"{job.name}/rank{rank}"
    state = {"micro": 0, "epoch": 0, "replay_pos": 0, "stream_done": False, "tokens": 0}
    replay: list = []
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            ds_engine.load_state(engine, Path(d))
            state = json.loads((Path(d) / f"rank{rank}.json").read_text())
            replay = [from_json(r) for r in _read_jsonl(Path(d) / f"replay-rank{rank}.jsonl")]
    ray.get(job.buffer.rewind.remote(consumer, state["micro"]))
    with open(Path(job.storage_dir) / f"{job.name}-workers.jsonl", "a") as fh:
        fh.write(json.dumps({"rank": rank, "pid": os.getpid(), "resumed_at": state["micro"],
                             "time": time.time()}) + "\n")

    if not job.overlap_rollout:
        while not ray.get(job.buffer.stats.remote())["closed"]:
            time.sleep(1.0)
    forward = _forward_sft if job.kind == "sft" else _forward_dpo
    placeholder = _placeholder(job)
    t_last, tok_window = time.perf_counter(), 0

    def next_items() -> tuple[list, tuple | None, bool]:
        """(items, (lease, keys) to ack, phase finished on this rank)."""
        if not state["stream_done"]:
            got = ray.get(job.buffer.take.remote(consumer, job.micro_batch_size, job.take_timeout_s))
            keys = [k for k, _ in got["items"]]
            items = ray.get([r for _, r in got["items"]]) if keys else []
            return items, (got["lease"], keys) if keys else None, got["done"]
        order = list(range(len(replay)))
        random.Random(job.seed * 1000 + state["epoch"] * 10 + rank).shuffle(order)
        pos = state["replay_pos"]
        idx = order[pos:pos + job.micro_batch_size]
        return [replay[i] for i in idx], None, pos + len(idx) >= len(order)

    while True:
        if job.max_steps is not None and state["micro"] >= job.max_steps:
            break
        items, lease, finished = next_items()
        n_total, n_unfinished = _allreduce([len(items), 0.0 if finished else 1.0], engine.device)
        if n_total == 0:
            if n_unfinished > 0:
                continue  # the stream is still producing; wait together
            # this pass is over on every rank; the stream is pass 0, replays follow
            state["epoch"] = 1 if not state["stream_done"] else state["epoch"] + 1
            state["stream_done"], state["replay_pos"] = True, 0
            if state["epoch"] >= job.epochs:
                break
            continue
        real = bool(items)
        loss, metrics, ntok = forward(engine, tok, items if real else placeholder, job, *([ref_model] if ref_model else []))
        engine.backward(loss if real else loss * 0.0)
        engine.step()
        state["micro"] += 1
        if lease is not None:
            ray.get(job.buffer.ack.remote(consumer, lease[0], lease[1], state["micro"]))
            replay.extend(items)
        elif real:
            state["replay_pos"] += len(items)
        ntok = ntok if real else 0
        state["tokens"] += ntok
        tok_window += ntok
        if rank == 0 and real:
            now = time.perf_counter()
            row = {"stage": job.name, "step": state["micro"], "epoch": state["epoch"],
                   "lr": engine.get_lr()[0], "tokens": state["tokens"],
                   "tok_per_s": tok_window * world / max(now - t_last, 1e-9), **metrics}
            t_last, tok_window = now, 0
            with open(job.metrics_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        if state["micro"] % job.checkpoint_every == 0 and state["micro"] % job.grad_accum == 0:
            _checkpoint(engine, state, replay, rank, job, to_json)

    ds_engine.save_hf(engine, tok, Path(job.out_dir), rank)
    with open(Path(job.storage_dir) / f"{job.name}-rank{rank}-done.json", "w") as fh:
        json.dump({"micro": state["micro"], "tokens": state["tokens"], "replay": len(replay)}, fh)


def _checkpoint(engine, state, replay, rank, job, to_json) -> None:
    import ray.train
    from ray.train import Checkpoint

    from learners import ds_engine

    with tempfile.TemporaryDirectory() as tmp:
        ds_engine.save_state(engine, Path(tmp))
        (Path(tmp) / f"rank{rank}.json").write_text(json.dumps(state))
        with open(Path(tmp) / f"replay-rank{rank}.jsonl", "w") as fh:
            for r in replay:
                fh.write(json.dumps(to_json(r)) + "\n")
        ray.train.report({"step": state["micro"]}, checkpoint=Checkpoint.from_directory(tmp))


# ------------------------------------------------------------------------ driver side


def run_learner(job: LearnJob) -> dict:
    """Run (or resume) a learning job to completion; returns the rank-0 summary."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    Path(job.storage_dir).mkdir(parents=True, exist_ok=True)
    use_gpu = job.gpus_per_worker > 0
    resources = {"CPU": job.cpus_per_worker, **job.resources_per_worker}
    if use_gpu:
        resources["GPU"] = job.gpus_per_worker
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=asdict(job) | {"buffer": job.buffer},
        scaling_config=ScalingConfig(num_workers=job.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=job.name, storage_path=str(Path(job.storage_dir).resolve()),
            failure_config=FailureConfig(max_failures=job.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            worker_runtime_env={"env_vars": _worker_env()},
        ),
    )
    trainer.fit()
    done = Path(job.storage_dir) / f"{job.name}-rank0-done.json"
    return json.loads(done.read_text())


def _worker_env() -> dict:
    keys = ("DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR", "SELFCRITIQUE_CACHE", "HF_HUB_OFFLINE", "OMP_NUM_THREADS")
    return {k: os.environ[k] for k in keys if k in os.environ}

