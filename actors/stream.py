"""The streaming rollout: samplers -> critics -> buffer, passing only object refs.

The caller's process never fetches samples: it waits on small summary objects
(each sampler/critic call returns a summary and a payload), forwards payload refs to
the next stage, and re-dispatches a batch whose actor died. The buffer dedupes by
sample key, so a retried batch can never be counted twice. Work between the samplers
and the buffer is bounded, so a full buffer stalls the samplers rather than piling
samples up in the object store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import ray

from actors.engine import SamplingSpec
from actors.pool import ACTOR_FAILURES, ActorPool
from core.records import Problem

MAX_BATCH_ATTEMPTS = 4


@dataclass
class RolloutReport:
    batches: int = 0
    samples: int = 0
    graded: int = 0
    accepted: int = 0  # new in the buffer (duplicates of retried work excluded)
    tokens: int = 0
    wall_seconds: float = 0.0
    retries: int = 0
    ungraded: int = 0
    per_actor_tokens: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_seconds if self.wall_seconds else 0.0


def _batches(problems: list[Problem], size: int) -> list[list[Problem]]:
    return [problems[i:i + size] for i in range(0, len(problems), size)]


def pipeline_budget(n_samplers: int, n_critics: int, per_actor_inflight: int, max_pending_puts: int) -> int:
    """Most batches between the prompt queue and the buffer at any moment."""
    return per_actor_inflight * (n_samplers + n_critics) + max_pending_puts


def run_rollout(problems: list[Problem], samplers: ActorPool, critics: ActorPool, buffer, spec: SamplingSpec,
                batch_prompts: int, *, policy_checkpoint: tuple[str, str] | None = None,
                judge_checkpoint: tuple[str, str] | None = None, per_actor_inflight: int = 2,
                max_pending_puts: int = 2, on_progress: Callable[[dict], None] | None = None,
                close_buffer: bool = True) -> RolloutReport:
    report = RolloutReport()
    t0 = time.perf_counter()
    todo = list(enumerate(_batches(problems, batch_prompts)))[::-1]  # a stack of (batch id, problems)
    attempts: dict[int, int] = {}
    # summary ref -> (kind, batch id, actor index, payload ref, extra)
    inflight: dict[ray.ObjectRef, tuple] = {}
    puts: dict[ray.ObjectRef, int] = {}

    # Backpressure has to reach the samplers: a batch counts against this budget from
    # dispatch until the buffer has taken it. Gating on puts alone let fast samplers pile
    # unbounded work onto slower critics, whose burst of puts then filled the buffer's
    # concurrency slots and starved the consumers (a deadlock).
    budget = pipeline_budget(len(samplers), len(critics), per_actor_inflight, max_pending_puts)

    def dispatch_samplers() -> None:
        while todo and len(inflight) + len(puts) < budget:
            idx = samplers.least_loaded()
            if idx is None or samplers.outstanding[idx] >= per_actor_inflight:
                return
            bid, batch = todo.pop()
            attempts[bid] = attempts.get(bid, 0) + 1
            if attempts[bid] > MAX_BATCH_ATTEMPTS:
                raise RuntimeError(f"batch {bid} failed {MAX_BATCH_ATTEMPTS} times; giving up")
            summ, payload = samplers.submit(idx, "generate", batch, spec, policy_checkpoint, num_returns=2)
            inflight[summ] = ("sample", bid, idx, payload, batch)

    def dispatch_critic(bid: int, samples_ref, batch) -> None:
        idx = critics.least_loaded()
        if idx is None:
            critics.wait_any_alive()
            idx = critics.least_loaded()
        summ, payload = critics.submit(idx, "grade", samples_ref, judge_checkpoint, num_returns=2)
        inflight[summ] = ("grade", bid, idx, payload, (samples_ref, batch))

    dispatch_samplers()
    while inflight or todo or puts:
        if not inflight and not puts and todo:
            samplers.wait_any_alive()
            dispatch_samplers()
            continue
        ready, _ = ray.wait(list(inflight) + list(puts), num_returns=1, timeout=1.0)
        for ref in ready:
            if ref in puts:
                bid = puts.pop(ref)
                report.accepted += ray.get(ref)
                continue
            kind, bid, idx, payload, extra = inflight.pop(ref)
            pool = samplers if kind == "sample" else critics
            pool.finished(idx)
            try:
                summary = ray.get(ref)
            except ACTOR_FAILURES:
                pool.mark_failed(idx)
                report.retries += 1
                if kind == "sample":
                    todo.append((bid, extra))  # whole batch again, on whichever actor is free
                else:
                    dispatch_critic(bid, *extra)  # the samples survive in the object store
                continue
            if kind == "sample":
                report.samples += summary["samples"]
                report.tokens += summary["tokens"]
                report.per_actor_tokens[summary["pid"]] = report.per_actor_tokens.get(summary["pid"], 0) + summary["tokens"]
                dispatch_critic(bid, payload, extra)
            else:
                report.graded += summary["graded"]
                report.ungraded += summary["ungraded"]
                report.batches += 1
                puts[buffer.put.remote([payload])] = bid
            if on_progress:
                on_progress({"kind": kind, **summary})
        dispatch_samplers()
    if close_buffer:
        ray.get(buffer.close.remote())
    report.wall_seconds = time.perf_counter() - t0
    return report
