"""Run a rollout and a learner at the same time, joined by a buffer.

Sampling and grading run in a driver thread (which only handles object refs); the
learner's Ray Train job runs in the foreground and starts on the first batch. A
monitor thread turns the learner's metric file and the buffer's stats into progress
bars and W&B points.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from pathlib import Path

import ray
from tqdm import tqdm

from actors.buffer import Buffer
from actors.journal import Journal, RunDirWriteError
from actors.stream import CallDeadline, RolloutReport, run_rollout
from core.records import Problem
from learners.trainer import LearnJob, run_learner
from pipelines.run_dir import StageError
from pipelines.runtime import Runtime


def remaining_problems(problems: list[Problem], lineage: Path, n: int) -> list[Problem]:
    """Problems whose n samples are not all in the lineage yet (for resume)."""
    counts: dict[str, int] = {}
    for row in Journal.read(lineage):
        pid = row["sample"]["problem"]["id"]
        counts[pid] = counts.get(pid, 0) + 1
    return [p for p in problems if counts.get(p.id, 0) < n]


def stage_error(stage: str, err: BaseException) -> StageError:
    """A rollout's failure as the CLI shows it; a run-directory write names its file."""
    if isinstance(err, StageError):
        return err
    cause = getattr(err, "cause", None) or err  # a worker's error arrives wrapped in RayTaskError
    if isinstance(cause, RunDirWriteError):
        return StageError(f"{stage}: {cause}")
    return StageError(f"{stage}: rollout failed: {err!r}")


def make_buffer(rt: Runtime, directory: Path, group_size: int | None, policy=None, enricher=None):
    opts = {"resources": rt.cfg.resources.buffer_resources} if rt.cfg.resources.buffer_resources else {}
    return Buffer.options(num_cpus=0, **opts).remote(str(directory), rt.cfg.resources.buffer_capacity,
                                                      group_size, policy, enricher)


def prompts_per_call(sampling, n: int) -> int:
    """Keep each sampler call at `batch_prompts x sampling.n` sequences whatever this
    rollout's n is: a greedy eval (n=1) would otherwise send the engine 8x smaller
    batches, and a CPU engine's throughput falls with the batch."""
    return max(1, sampling.batch_prompts * sampling.n // max(n, 1))


def rollout_with_progress(rt: Runtime, stage: str, problems: list[Problem], buffer, spec, *,
                          critic_policy: str, policy_ckpt=None, judge_ckpt=None) -> RolloutReport:
    total = len(problems) * spec.n
    bar = tqdm(total=total, desc=f"{stage}: graded", unit="sample", leave=False)
    samplers = rt.samplers()
    critics = rt.critics(critic_policy)

    # Calls overlap on an actor (continuous batching), so a call's own rate undercounts:
    # report tokens generated so far over the time since sampling started.
    sampled = {"tokens": 0, "t0": time.perf_counter()}

    def progress(ev: dict) -> None:
        if ev["kind"] == "grade":
            bar.update(ev["graded"])
        else:
            sampled["tokens"] += ev["tokens"]
            secs = time.perf_counter() - sampled["t0"]
            rt.tracker.log({f"{stage}/sampler_tok_per_s": sampled["tokens"] / max(secs, 1e-9)})

    try:
        res = rt.cfg.resources
        rep = run_rollout(problems, samplers, critics, buffer, spec, prompts_per_call(rt.cfg.sampling, spec.n),
                          policy_checkpoint=policy_ckpt, judge_checkpoint=judge_ckpt, on_progress=progress,
                          deadline=CallDeadline(res.call_deadline_s, res.call_deadline_per_item_s))
    except Exception as e:
        raise stage_error(stage, e) from e
    finally:
        bar.close()
    rt.tracker.log({f"{stage}/rollout_tok_per_s": rep.tokens_per_s, f"{stage}/rollout_samples": rep.samples,
                    f"{stage}/rollout_retries": rep.retries, f"{stage}/rollout_hung_kills": rep.hung_kills,
                    f"{stage}/ungraded": rep.ungraded})
    return rep


def stream_and_learn(rt: Runtime, stage: str, problems: list[Problem], spec, job: LearnJob, buffer, *,
                     critic_policy: str, policy_ckpt=None, judge_ckpt=None) -> dict:
    errors: list[BaseException] = []
    report: dict = {}

    def rollout() -> None:
        try:
            report["rollout"] = asdict(rollout_with_progress(rt, stage, problems, buffer, spec,
                                                             critic_policy=critic_policy, policy_ckpt=policy_ckpt,
                                                             judge_ckpt=judge_ckpt))
        except BaseException as e:  # surfaced after the learner stops
            errors.append(e)
            try:
                ray.get(buffer.close.remote())  # let the learner drain what exists and stop
            except Exception:
                pass  # the buffer marks itself closed even when its last writes fail

    stop = threading.Event()
    producer = threading.Thread(target=rollout, name=f"{stage}-rollout", daemon=True)
    monitor = threading.Thread(target=_monitor, args=(rt, stage, job, buffer, stop), daemon=True)
    producer.start()
    monitor.start()
    try:
        summary = run_learner(job)
    except BaseException:
        producer.join(timeout=60)
        if errors:  # the rollout's failure (a full disk, say) is the cause to report
            raise stage_error(stage, errors[0]) from errors[0]
        raise
    finally:
        producer.join(timeout=3600)
        stop.set()
        monitor.join(timeout=10)
    if errors:
        raise stage_error(stage, errors[0]) from errors[0]
    report["learner"] = summary
    report["buffer"] = ray.get(buffer.stats.remote())
    return report


def _monitor(rt: Runtime, stage: str, job: LearnJob, buffer, stop: threading.Event) -> None:
    """Tail the learner's metrics and the buffer's stats into W&B and a progress bar.

    One last read after the stop: a short learner writes its final rows between two polls."""
    pos = 0
    bar = tqdm(desc=f"{stage}: train steps", unit="step", leave=False)
    last_stats = 0.0
    while not stop.is_set():
        pos = _log_new_rows(rt, stage, job, pos, bar)
        if time.monotonic() - last_stats > 5:
            last_stats = time.monotonic()
            _log_buffer_stats(rt, stage, buffer)
        stop.wait(1.0)
    _log_new_rows(rt, stage, job, pos, bar)
    bar.close()


def _log_new_rows(rt: Runtime, stage: str, job: LearnJob, pos: int, bar) -> int:
    """Log the learner's metric rows written since byte `pos`; returns where the next read starts.
    Only whole lines are taken: a row still being written is read next time."""
    try:
        with open(job.metrics_path, "rb") as fh:
            fh.seek(pos)
            new = fh.read()
    except OSError:  # not written yet
        return pos
    for line in new.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        pos += len(line)
        bar.update(1)
        bar.set_postfix(loss=f"{row.get('loss', 0):.3f}")
        rt.tracker.log({f"{stage}/train/{k}": v for k, v in row.items() if k != "stage"})
    return pos


def _log_buffer_stats(rt: Runtime, stage: str, buffer) -> None:
    try:
        st = ray.get(buffer.stats.remote(), timeout=5)
    except Exception:  # a restarting buffer answers late; the next poll logs it
        return
    rt.tracker.log({f"{stage}/buffer/{k}": st[k] for k in
                    ("depth", "leased", "received", "acked", "kept", "rejected", "in_rate", "out_rate",
                     "accept_rate")})
