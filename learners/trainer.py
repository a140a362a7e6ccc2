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
    plain_when_single: bool = True  # one worker: ZeRO stage 0 (ds_engine.zero_stage_for)
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


# ------------------------------------------------------------------------ decisions


def pass_action(n_total: int, n_unfinished: int) -> Literal["train", "wait", "end_pass"]:
    """What every rank does after the collective count of the items taken this round.

    train: some rank has data (ranks without it run a zero-weight placeholder);
    wait: no rank has data but the stream is still producing; end_pass: this pass
    (the stream, or a replay epoch) is over on every rank. No rank steps unless `train`.
    """
    if n_total > 0:
        return "train"
    return "wait" if n_unfinished > 0 else "end_pass"


def after_pass(state: dict, epochs: int) -> tuple[dict, bool]:
    """(state for the next pass, whether training is over). The stream is pass 0, replays follow."""
    epoch = 1 if not state["stream_done"] else state["epoch"] + 1
    return state | {"epoch": epoch, "stream_done": True, "replay_pos": 0}, epoch >= epochs


TAKE_GRACE_S = 120.0  # beyond the take's own wait: a busy buffer on 2 shared cores answers well within it


def bounded_take(buffer, consumer: str, n: int, timeout_s: float, step: int, grace_s: float = TAKE_GRACE_S) -> dict:
    """buffer.take with a bound on its reply. A demo learner once waited forever on a take after
    its last ack, the buffer idle. A take that does not answer is given up: `rewind` puts any
    lease it may have granted back in the queue (exactly-once holds: nothing after `step` was
    acked), and the take is asked again. A second silence fails the worker, so that Ray Train
    restarts it from its checkpoint instead of the stage hanging."""
    import ray
    from ray.exceptions import GetTimeoutError

    for _ in range(2):
        ref = buffer.take.remote(consumer, n, timeout_s)
        try:
            return ray.get(ref, timeout=timeout_s + grace_s)
        except GetTimeoutError:
            ray.cancel(ref)
            ray.get(buffer.rewind.remote(consumer, step), timeout=grace_s)
    raise RuntimeError(f"{consumer}: the buffer did not answer two takes within {timeout_s + grace_s:.0f} s each")


def loss_normalizer(n_global: float, world: int) -> float:
    """Divide each rank's summed loss by this: DeepSpeed averages gradients over ranks, so
    the result is the mean over every item of every rank, whatever each rank held."""
    return max(n_global, 1) / world


# ------------------------------------------------------------------------ worker side


def _allreduce(values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def prepare_batch(tok, items: list, job: LearnJob, shared_layout: bool = True) -> dict:
    """Collated CPU tensors; DPO rows are [chosen..., rejected...] with cached reference log-probs.

    shared_layout=False keeps one row per sequence (see LearnerWorker: ranks must run alike)."""
    import torch

    from learners.batching import collate, collate_best, encode, pad_id

    col = collate_best if shared_layout else collate
    if job.kind == "sft":
        return col([encode(tok, it.messages, it.response, job.max_len) for it in items], pad_id(tok))
    enc = [encode(tok, p.messages, p.chosen, job.max_len) for p in items] + \
          [encode(tok, p.messages, p.rejected, job.max_len) for p in items]
    batch = col(enc, pad_id(tok))
    cached = [p.ref_chosen_logp for p in items] + [p.ref_rejected_logp for p in items]
    batch["ref_logps"] = torch.tensor(cached, dtype=torch.float32) if None not in cached else None
    return batch


def loss_units(batch: dict, job: LearnJob) -> int:
    """What the loss averages over: response tokens (SFT), pairs (DPO)."""
    return response_tokens(batch) if job.kind == "sft" else batch["input_ids"].shape[0] // 2


def sequence_tokens(batch: dict | None) -> int:
    """Prompt and response positions of every sequence in the batch, shared ones counted per sequence."""
    return int(batch["attention_mask"].sum()) if batch else 0


def response_tokens(batch: dict | None) -> int:
    from learners.batching import n_targets

    return n_targets(batch) if batch else 0


def sft_step_loss(engine, batch: dict, job: LearnJob, normalizer: float, ref_model=None):
    from learners.losses import response_logps

    lp, ntok = response_logps(engine, batch)
    return -lp.sum() / normalizer, {"loss": float(-lp.sum().detach() / ntok.sum().clamp(min=1))}


def dpo_step_loss(engine, batch: dict, job: LearnJob, normalizer: float, ref_model=None):
    import torch

    from learners.losses import dpo_loss, response_logps

    lp, ntok = response_logps(engine, batch)
    n = lp.shape[0] // 2
    cached = batch["ref_logps"]
    extra = {}
    if job.ref_mode == "per_step":
        with torch.no_grad():
            ref_lp, _ = response_logps(ref_model, batch)
        if cached is not None:
            extra["ref_cache_max_abs_diff"] = float((cached - ref_lp.float()).abs().max())
    else:
        ref_lp = cached
    out = dpo_loss(lp[:n], lp[n:], ref_lp[:n], ref_lp[n:], beta=job.beta, chosen_nll=-lp[:n] / ntok[:n].clamp(min=1),
                   nll_coef=job.nll_coef, label_smoothing=job.label_smoothing, loss_type=job.dpo_loss,
                   normalizer=normalizer)
    return out["loss"], {k: float(v.detach()) for k, v in out.items()} | extra


def same_graph_not_needed(world: int) -> bool:
    """Whether a rank may pick its batch layout alone: only when it is the only rank.

    ZeRO reduces gradients in buckets filled in the order autograd finishes each weight's
    gradient, and assumes every rank fills them alike. The shared-prefix layout makes up to
    three model calls and the one-row layout (and a placeholder) one, so two ranks on different
    layouts order some same-sized weights differently (a layer's k_proj and v_proj) and the
    all-reduce adds one weight's gradient to another's: seen as a 2-rank run whose layer-1 keys
    moved 85% differently from a 1-rank run on the same batches, when the rank owning them held
    the placeholder. One row per sequence gives every rank the same graph."""
    return world == 1


def _placeholder(job):
    from core.records import Pair, Problem, SFTExample

    if job.kind == "sft":
        return [SFTExample("placeholder", PLACEHOLDER_MESSAGES, "1")]
    p = Problem("placeholder", "1")
    return [Pair(p, PLACEHOLDER_MESSAGES, "1", "2", 1, 0, "a", "b", 0.0, 0.0)]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


class LearnerWorker:
    """One rank's learner: engine, position in the data, and the steps of its loop."""

    def __init__(self, job: LearnJob, rank: int, world: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from learners import ds_engine

        self.job, self.rank, self.world = job, rank, world
        torch.manual_seed(job.seed + rank)
        if job.threads_per_worker:
            torch.set_num_threads(job.threads_per_worker)
        bf16 = job.bf16 and ds_engine.bf16_supported()
        self.tok = AutoTokenizer.from_pretrained(job.model_path)
        model = AutoModelForCausalLM.from_pretrained(job.model_path, dtype=torch.float32)
        if job.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        conf = ds_engine.ds_config(micro_batch_size=job.micro_batch_size, grad_accum=job.grad_accum,
                                   world_size=world, bf16=bf16,
                                   zero_stage=ds_engine.zero_stage_for(job.zero_stage, world)
                                   if job.plain_when_single else job.zero_stage)
        self.engine = ds_engine.init_engine(model, conf, job.lr, job.warmup_steps, job.weight_decay)
        self.ref_model = None
        if job.kind == "dpo" and job.ref_mode == "per_step":
            self.ref_model = AutoModelForCausalLM.from_pretrained(
                job.model_path, dtype=torch.bfloat16 if bf16 else torch.float32).eval().to(self.engine.device)
            self.ref_model.requires_grad_(False)
        self.step_loss = sft_step_loss if job.kind == "sft" else dpo_step_loss
        self.shared_layout = same_graph_not_needed(world)
        self.placeholder = self.batch(_placeholder(job))
        self.consumer = f"{job.name}/rank{rank}"
        self.state = {"micro": 0, "epoch": 0, "replay_pos": 0, "stream_done": False, "tokens": 0}
        self.replay: list = []
        self.t_last, self.tok_window, self.t_start = time.perf_counter(), 0, time.perf_counter()
        # this attempt's optimizer steps alone (no waiting for data): the learner's own throughput
        self.compute = {"step_seconds": 0.0, "seq_tokens": 0}

    def restore(self) -> None:
        """Load the last checkpoint, if any, and re-queue what was taken after it."""
        import ray
        import ray.train

        from core.records import from_json
        from learners import ds_engine

        ckpt = ray.train.get_checkpoint()
        if ckpt:
            with ckpt.as_directory() as d:
                ds_engine.load_state(self.engine, Path(d))
                self.state = json.loads((Path(d) / f"rank{self.rank}.json").read_text())
                self.replay = [from_json(r) for r in _read_jsonl(Path(d) / f"replay-rank{self.rank}.jsonl")]
        ray.get(self.job.buffer.rewind.remote(self.consumer, self.state["micro"]))
        with open(Path(self.job.storage_dir) / f"{self.job.name}-workers.jsonl", "a") as fh:
            fh.write(json.dumps({"rank": self.rank, "pid": os.getpid(), "resumed_at": self.state["micro"],
                                 "time": time.time()}) + "\n")

    def wait_for_rollout(self) -> None:
        import ray

        if not self.job.overlap_rollout:
            while not ray.get(self.job.buffer.stats.remote())["closed"]:
                time.sleep(1.0)

    def batch(self, items: list) -> dict:
        return prepare_batch(self.tok, items, self.job, self.shared_layout)

    def next_items(self) -> tuple[list, tuple | None, bool]:
        """(items, (lease, keys) to ack, phase finished on this rank)."""
        import ray

        job, state = self.job, self.state
        if not state["stream_done"]:
            got = bounded_take(job.buffer, self.consumer, job.micro_batch_size, job.take_timeout_s, state["micro"])
            keys = [k for k, _ in got["items"]]
            items = ray.get([r for _, r in got["items"]]) if keys else []
            return items, (got["lease"], keys) if keys else None, got["done"]
        order = list(range(len(self.replay)))
        random.Random(job.seed * 1000 + state["epoch"] * 10 + self.rank).shuffle(order)
        pos = state["replay_pos"]
        idx = order[pos:pos + job.micro_batch_size]
        return [self.replay[i] for i in idx], None, pos + len(idx) >= len(order)

    def step(self, batch: dict | None, n_global: float) -> dict | None:
        """One optimizer step over every rank's items (collective); None when no rank had any.

        A rank without items (batch None) runs the placeholder at zero weight, so that the
        gradient all-reduce still meets, and adds nothing to it.
        """
        from learners.batching import to_device

        if n_global <= 0:
            return None  # nothing moves: no backward, no optimizer or scheduler step
        real = batch is not None
        loss, metrics = self.step_loss(self.engine, to_device(batch if real else self.placeholder, self.engine.device),
                                       self.job, loss_normalizer(n_global, self.world), self.ref_model)
        self.engine.backward(loss if real else loss * 0.0)
        self.engine.step()
        self.state["micro"] += 1
        return metrics

    def record(self, items: list, lease: tuple | None, ntok: int, metrics: dict) -> None:
        """Ack what the stream gave (with the step that trained it), advance the replay, log."""
        import ray

        if lease is not None:
            ray.get(self.job.buffer.ack.remote(self.consumer, lease[0], lease[1], self.state["micro"]))
            self.replay.extend(items)
        elif items:
            self.state["replay_pos"] += len(items)
        self.state["tokens"] += ntok
        self.tok_window += ntok
        if self.rank == 0 and items:
            now = time.perf_counter()
            row = {"stage": self.job.name, "step": self.state["micro"], "epoch": self.state["epoch"],
                   "lr": self.engine.get_lr()[0], "tokens": self.state["tokens"],
                   "tok_per_s": self.tok_window * self.world / max(now - self.t_last, 1e-9), **metrics}
            self.t_last, self.tok_window = now, 0
            with open(self.job.metrics_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    def maybe_checkpoint(self) -> None:
        from core.records import to_json

        micro, job = self.state["micro"], self.job
        if micro % job.checkpoint_every == 0 and micro % job.grad_accum == 0:
            _checkpoint(self.engine, self.state, self.replay, self.rank, job, to_json)

    def finish(self) -> None:
        from learners import ds_engine

        ds_engine.save_hf(self.engine, self.tok, Path(self.job.out_dir), self.rank)
        with open(Path(self.job.storage_dir) / f"{self.job.name}-rank{self.rank}-done.json", "w") as fh:
            json.dump({"micro": self.state["micro"], "tokens": self.state["tokens"], "replay": len(self.replay),
                       "train_seconds": time.perf_counter() - self.t_start, **self.compute}, fh)

    def run(self) -> None:
        job = self.job
        while job.max_steps is None or self.state["micro"] < job.max_steps:
            items, lease, finished = self.next_items()
            batch = self.batch(items) if items else None
            units = loss_units(batch, job) if batch else 0
            n_global, n_unfinished = _allreduce([units, 0.0 if finished else 1.0], self.engine.device)
            action = pass_action(n_global, n_unfinished)
            if action == "end_pass":
                self.state, done = after_pass(self.state, job.epochs)
                if done:
                    break
            if action != "train":
                continue
            t0 = time.perf_counter()
            metrics = self.step(batch, n_global)
            self.compute["step_seconds"] += time.perf_counter() - t0
            self.compute["seq_tokens"] += sequence_tokens(batch)
            self.record(items, lease, response_tokens(batch), metrics)
            self.maybe_checkpoint()


def train_loop(cfg: dict) -> None:
    """Ray Train's per-worker entry point."""
    import ray.train

    ctx = ray.train.get_context()
    worker = LearnerWorker(LearnJob(**cfg), ctx.get_world_rank(), ctx.get_world_size())
    worker.restore()
    worker.wait_for_rollout()
    worker.run()
    worker.finish()


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
    from ray.train.torch import TorchConfig

    from learners.ray_trainer import BufferFedTorchTrainer

    Path(job.storage_dir).mkdir(parents=True, exist_ok=True)
    use_gpu = job.gpus_per_worker > 0
    resources = {"CPU": job.cpus_per_worker, **job.resources_per_worker}
    if use_gpu:
        resources["GPU"] = job.gpus_per_worker
    trainer = BufferFedTorchTrainer(
        train_loop,
        train_loop_config=asdict(job) | {"buffer": job.buffer},
        scaling_config=ScalingConfig(num_workers=job.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=job.name, storage_path=str(Path(job.storage_dir).resolve()),
            failure_config=FailureConfig(max_failures=job.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    trainer.fit()
    done = Path(job.storage_dir) / f"{job.name}-rank0-done.json"
    return json.loads(done.read_text())


