"""The streaming rollout: samplers -> critics -> buffer, passing only object refs.

The caller's process never fetches samples: it waits on small summary objects
(each sampler/critic call returns a summary and a payload), forwards payload refs to
the next stage, and re-dispatches a batch whose actor died. An actor that misses a
call deadline (it scales with the items the actor holds) is killed, which turns a
hang into that same death. The buffer dedupes by sample key, so a retried batch can
never be counted twice. Work between the samplers and the buffer is bounded, so a
full buffer stalls the samplers rather than piling samples up in the object store.
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
    hung_kills: int = 0  # actors killed for missing a call deadline
    ungraded: int = 0
    per_actor_tokens: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_seconds if self.wall_seconds else 0.0


@dataclass(frozen=True)
class CallDeadline:
    """How long an actor may take over a call before it counts as hung: a base plus a
    share per item (sequence) that the actor holds at dispatch, this call's included,
    since the calls queued ahead of it (or sharing its engine batch) slow it down."""

    base_s: float
    per_item_s: float

    def seconds(self, items_held: int) -> float:
        return self.base_s + self.per_item_s * items_held


@dataclass
class _Call:
    kind: str  # "sample" or "grade"
    bid: int  # batch id
    idx: int  # actor index in its pool
    payload: ray.ObjectRef
    extra: tuple
    items: int
    due: float  # time.monotonic() deadline; inf once its actor was killed


def _batches(problems: list[Problem], size: int) -> list[list[Problem]]:
    return [problems[i:i + size] for i in range(0, len(problems), size)]


def pipeline_budget(n_samplers: int, n_critics: int, per_actor_inflight: int, max_pending_puts: int) -> int:
    """Most batches between the prompt queue and the buffer at any moment."""
    return per_actor_inflight * (n_samplers + n_critics) + max_pending_puts


class _Rollout:
    """One rollout's driver state: calls in flight, puts in flight, batches to go."""

    def __init__(self, problems, samplers: ActorPool, critics: ActorPool, buffer, spec: SamplingSpec,
                 batch_prompts: int, policy_checkpoint, judge_checkpoint, per_actor_inflight: int,
                 max_pending_puts: int, on_progress, deadline: CallDeadline | None):
        self.samplers, self.critics, self.buffer, self.spec = samplers, critics, buffer, spec
        self.policy_checkpoint, self.judge_checkpoint = policy_checkpoint, judge_checkpoint
        self.per_actor_inflight, self.on_progress, self.deadline = per_actor_inflight, on_progress, deadline
        self.report = RolloutReport()
        self.todo = list(enumerate(_batches(problems, batch_prompts)))[::-1]  # a stack of (batch id, problems)
        self.attempts: dict[int, int] = {}
        self.inflight: dict[ray.ObjectRef, _Call] = {}  # keyed by the call's summary ref
        self.puts: dict[ray.ObjectRef, int] = {}
        self.held: dict[tuple[str, int], int] = {}  # (kind, actor index) -> items in its calls in flight
        # Backpressure has to reach the samplers: a batch counts against this budget from
        # dispatch until the buffer has taken it. Gating on puts alone let fast samplers pile
        # unbounded work onto slower critics, whose burst of puts then filled the buffer's
        # concurrency slots and starved the consumers (a deadlock).
        self.budget = pipeline_budget(len(samplers), len(critics), per_actor_inflight, max_pending_puts)

    def pool(self, kind: str) -> ActorPool:
        return self.samplers if kind == "sample" else self.critics

    def track(self, kind: str, idx: int, refs, bid: int, extra: tuple, items: int) -> None:
        held = self.held[kind, idx] = self.held.get((kind, idx), 0) + items
        due = time.monotonic() + self.deadline.seconds(held) if self.deadline else float("inf")
        self.inflight[refs[0]] = _Call(kind, bid, idx, refs[1], extra, items, due)

    def dispatch_samplers(self) -> None:
        while self.todo and len(self.inflight) + len(self.puts) < self.budget:
            idx = self.samplers.least_loaded()
            if idx is None or self.samplers.outstanding[idx] >= self.per_actor_inflight:
                return
            bid, batch = self.todo.pop()
            self.attempts[bid] = self.attempts.get(bid, 0) + 1
            if self.attempts[bid] > MAX_BATCH_ATTEMPTS:
                raise RuntimeError(f"batch {bid} failed {MAX_BATCH_ATTEMPTS} times; giving up")
            refs = self.samplers.submit(idx, "generate", batch, self.spec, self.policy_checkpoint, num_returns=2)
            self.track("sample", idx, refs, bid, (batch,), len(batch) * self.spec.n)

    def dispatch_critic(self, bid: int, samples_ref, batch) -> None:
        idx = self.critics.least_loaded()
        if idx is None:
            self.critics.wait_any_alive()
            idx = self.critics.least_loaded()
        refs = self.critics.submit(idx, "grade", samples_ref, self.judge_checkpoint, num_returns=2)
        self.track("grade", idx, refs, bid, (samples_ref, batch), len(batch) * self.spec.n)

    def kill_hung(self) -> None:
        now = time.monotonic()
        for call in list(self.inflight.values()):
            if call.due < now:
                self.pool(call.kind).kill_hung(call.idx)
                self.report.hung_kills += 1
                for other in self.inflight.values():  # they fail with the actor; no second kill
                    if (other.kind, other.idx) == (call.kind, call.idx):
                        other.due = float("inf")

    def failed(self, call: _Call) -> None:
        self.pool(call.kind).mark_failed(call.idx)
        self.report.retries += 1
        if call.kind == "sample":
            self.todo.append((call.bid, call.extra[0]))  # whole batch again, on whichever actor is free
        else:
            self.dispatch_critic(call.bid, *call.extra)  # the samples survive in the object store

    def settle(self, call: _Call) -> None:
        self.pool(call.kind).finished(call.idx)
        self.held[call.kind, call.idx] -= call.items

    def done(self, ref) -> None:
        if ref in self.puts:
            self.puts.pop(ref)
            self.report.accepted += ray.get(ref)
            return
        call = self.inflight.pop(ref)
        self.settle(call)
        try:
            summary = ray.get(ref)
        except ACTOR_FAILURES:
            self.failed(call)
            return
        rep = self.report
        if call.kind == "sample":
            rep.samples += summary["samples"]
            rep.tokens += summary["tokens"]
            rep.per_actor_tokens[summary["pid"]] = rep.per_actor_tokens.get(summary["pid"], 0) + summary["tokens"]
            self.dispatch_critic(call.bid, call.payload, call.extra[0])
        else:
            rep.graded += summary["graded"]
            rep.ungraded += summary["ungraded"]
            rep.batches += 1
            self.puts[self.buffer.put.remote([call.payload])] = call.bid
        if self.on_progress:
            self.on_progress({"kind": call.kind, **summary})

    def run(self) -> None:
        try:
            self.dispatch_samplers()
            while self.inflight or self.todo or self.puts:
                if not self.inflight and not self.puts and self.todo:
                    self.samplers.wait_any_alive()
                    self.dispatch_samplers()
                    continue
                ready, _ = ray.wait(list(self.inflight) + list(self.puts), num_returns=1, timeout=1.0)
                for ref in ready:
                    self.done(ref)
                self.kill_hung()
                self.dispatch_samplers()
        finally:  # a failed rollout leaves the pools' books straight for the next one
            for call in self.inflight.values():
                self.settle(call)


def run_rollout(problems: list[Problem], samplers: ActorPool, critics: ActorPool, buffer, spec: SamplingSpec,
                batch_prompts: int, *, policy_checkpoint: tuple[str, str] | None = None,
                judge_checkpoint: tuple[str, str] | None = None, per_actor_inflight: int = 2,
                max_pending_puts: int = 2, on_progress: Callable[[dict], None] | None = None,
                close_buffer: bool = True, deadline: CallDeadline | None = None) -> RolloutReport:
    t0 = time.perf_counter()
    r = _Rollout(problems, samplers, critics, buffer, spec, batch_prompts, policy_checkpoint, judge_checkpoint,
                 per_actor_inflight, max_pending_puts, on_progress, deadline)
    r.run()
    if close_buffer:
        ray.get(buffer.close.remote())
    r.report.wall_seconds = time.perf_counter() - t0
    return r.report
