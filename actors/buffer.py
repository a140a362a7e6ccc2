"""The replay buffer: object refs plus small metadata, bounded, exactly-once, persisted.

Graded samples arrive as refs to batches. The buffer is the single writer of the
stage's lineage: it appends every graded sample to `lineage.jsonl` the moment it
arrives, so a restarted buffer (or a resumed run) rebuilds its state from disk.
Every change is written before it is applied: a failed write (disk full) leaves the
state as the files say, and the error, naming the file, goes to the caller.

When samples are grouped by prompt (DPO pairing, RFT's per-prompt selection) a
group is processed only once all n of its samples are graded. The group policy is
a pure function from core.grading; what it returns (SFT examples, pairs, or the
group itself) is what consumers receive. An optional enricher actor (the DPO
reference scorer) annotates those before they become visible.

Delivery is lease/ack: `take` hands a consumer a disjoint batch of refs; `ack`
tags the keys with the consumer's training step. A learner that restores a
checkpoint at step S calls `rewind(consumer, S)`, which returns every lease it still
holds and every key it acked after S to the queue, so a batch is neither trained
twice nor skipped relative to the restored model.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ray

from actors.journal import Journal
from core.records import GradedSample, from_json, lineage_json, to_json

GroupPolicy = Callable[[list[GradedSample]], tuple[list[GradedSample], list[Any]]]


@dataclass
class BufferStats:
    depth: int = 0  # deliverable items waiting
    grouping: int = 0  # graded samples waiting for the rest of their group
    leased: int = 0
    received: int = 0
    duplicates_ignored: int = 0
    delivered: int = 0
    acked: int = 0
    kept: int = 0
    rejected: int = 0
    closed: bool = False
    finished: bool = False
    max_held: int = 0
    in_rate: float = 0.0
    out_rate: float = 0.0
    accept_rate: float | None = None
    extra: dict = field(default_factory=dict)


def _reconstructed() -> bool:
    """Whether Ray is restarting the actor this runs in (False outside an actor, as in unit tests)."""
    if not ray.is_initialized():
        return False
    try:
        return ray.get_runtime_context().was_current_actor_reconstructed
    except AssertionError:  # Ray's answer outside a worker process
        return False


# Producers wait inside `put` while the buffer is full, each holding a concurrency slot;
# consumers (take/ack) share the same pool of slots. Slots in an asyncio actor are only
# coroutines, so the pool is sized far above any bounded producer count (the streaming
# driver keeps a handful of puts in flight) and a full buffer can never lock out the
# consumers that would drain it.
@ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=1024)
class Buffer:
    def __init__(self, run_dir: str, capacity: int, group_size: int | None = None,
                 group_policy: GroupPolicy | None = None, enricher=None):
        self.capacity = capacity
        self.group_size = group_size
        self.group_policy = group_policy
        self.enricher = enricher
        d = Path(run_dir)
        self.lineage = Journal(d / "lineage.jsonl")  # one graded sample per line
        self.decisions = Journal(d / "decisions.jsonl")  # kept/rejected with reason
        self.deliverables = Journal(d / "deliverables.jsonl")  # what consumers get
        self.acks = Journal(d / "acks.jsonl")
        self._cond = asyncio.Condition()
        self._seen: set[str] = set()
        self._groups: dict[str, list[GradedSample]] = {}
        self._pending: OrderedDict[str, ray.ObjectRef] = OrderedDict()
        self._refs: dict[str, ray.ObjectRef] = {}  # key -> ref of every unacked deliverable
        self._leases: dict[int, tuple[str, list[str]]] = {}
        self._acked: dict[str, tuple[str, int]] = {}  # key -> (consumer, step)
        self._lease_ids = itertools.count(1)
        self._closed = False
        self._reserved = 0  # accepted by put, not yet deliverable (being emitted)
        self._stats = BufferStats()
        self._t0 = time.monotonic()
        self._closed_marker = d / "closed"
        self._recover(d)
        self._closed = self._recover_closed(_reconstructed())

    # ------------------------------------------------------------------ recovery

    def _recover(self, d: Path) -> None:
        graded = [from_json(r) for r in Journal.read(d / "lineage.jsonl")]
        decided = {r["key"] for r in Journal.read(d / "decisions.jsonl")}
        acked: dict[str, tuple[str, int]] = {}
        for r in Journal.read(d / "acks.jsonl"):
            if r.get("undo"):
                acked.pop(r["key"], None)
            else:
                acked[r["key"]] = (r["consumer"], r["step"])
        for g in graded:
            self._seen.add(g.key)
            self._stats.received += 1
            if self.group_size and g.key not in decided:
                self._groups.setdefault(g.sample.problem.id, []).append(g)
        for row in Journal.read(d / "deliverables.jsonl"):
            key = row["key"]
            if key in self._refs:
                continue
            ref = ray.put(decode_item(row["item"]))
            self._refs[key] = ref
            if key not in acked:
                self._pending[key] = ref
        if not self.group_size and self.group_policy is None:
            # A sample whose deliverable write failed (disk full) after its lineage write is
            # delivered from its lineage row (which has no token ids: consumers re-tokenize).
            orphans = [g for g in graded if g.key not in self._refs and g.key not in acked]
            self.deliverables.write([{"key": g.key, "item": encode_item(g)} for g in orphans])
            for g in orphans:
                self._refs[g.key] = self._pending[g.key] = ray.put(g)
        self._acked = acked
        self._stats.acked = len(acked)

    def _recover_closed(self, reconstructed: bool) -> bool:
        """A buffer Ray restarts (killed for memory, say) after its producer closed it is closed
        still: nobody will close it again, and consumers would wait for more forever. A new
        buffer for a resumed stage starts open; its stage closes it when its rollout ends."""
        if reconstructed:
            return self._closed_marker.exists()
        self._closed_marker.unlink(missing_ok=True)
        return False

    # ------------------------------------------------------------------ producers

    def _held(self) -> int:
        return len(self._pending) + sum(len(g) for g in self._groups.values()) + self._reserved

    def _room_for(self, n: int) -> bool:
        held = self._held()
        if held == 0 or held + n <= self.capacity:
            return True
        # Everything held sits in incomplete groups: refusing would deadlock the group wait.
        return not self._pending and not self._reserved

    async def put(self, batch_refs: list) -> int:
        """Add graded samples (a list holding one ref to a list of GradedSample).

        Waits while the buffer holds `capacity` undelivered items (backpressure),
        unless nothing is deliverable, which would deadlock the group wait.
        Returns how many new samples were accepted (duplicates are ignored).
        """
        batch: list[GradedSample] = await batch_refs[0]
        async with self._cond:
            await self._cond.wait_for(lambda: self._room_for(len(batch)))
            fresh = [g for g in batch if g.key not in self._seen]
            self.lineage.write([lineage_json(g) for g in fresh])
            self._stats.duplicates_ignored += len(batch) - len(fresh)
            self._seen.update(g.key for g in fresh)
            self._stats.received += len(fresh)
            ready: list[list[GradedSample]] = []
            if not self.group_size:
                ready.append(fresh)
            else:
                for g in fresh:
                    grp = self._groups.setdefault(g.sample.problem.id, [])
                    grp.append(g)
                    if len(grp) >= self.group_size:
                        ready.append(self._groups.pop(g.sample.problem.id))
            # Completed groups leave the grouping area now but are only deliverable after
            # _emit; reserving them keeps concurrent puts from overfilling the buffer.
            self._reserved += sum(len(g) for g in ready)
            self._stats.max_held = max(self._stats.max_held, self._held())
        for i, group in enumerate(ready):
            try:
                await self._emit(group)
            except BaseException:  # a failed write (disk full) releases the groups behind it too
                await self._release(sum(map(len, ready[i:])))
                raise
            await self._release(len(group))
        return len(fresh)

    async def _release(self, reserved: int) -> None:
        async with self._cond:
            self._reserved -= reserved
            self._cond.notify_all()

    async def _emit(self, group: list[GradedSample]) -> None:
        if self.group_policy is None:
            annotated, items = group, list(group)
        else:
            annotated, items = self.group_policy(group)
        if self.enricher is not None and items:
            items = await self.enricher.enrich.remote(items)
        rows, refs = [], []
        for item in items:
            key = item_key(item)
            rows.append({"key": key, "item": encode_item(item)})
            refs.append((key, ray.put(item)))
        # Deliverables before decisions: recovery re-emits a group with no decisions, and
        # deliverables it already has are not delivered twice (keys dedupe below).
        self.deliverables.write(rows)
        self.decisions.write([{"key": g.key, "kept": g.kept, "reason": g.keep_reason,
                               "score": g.grade.score} for g in annotated if g.kept is not None])
        self._stats.kept += sum(1 for g in annotated if g.kept)
        self._stats.rejected += sum(1 for g in annotated if g.kept is False)
        async with self._cond:
            for key, ref in refs:
                if key not in self._refs and key not in self._acked:
                    self._refs[key] = ref
                    self._pending[key] = ref
            self._cond.notify_all()

    async def put_items(self, item_refs: list) -> int:
        """Add ready-made deliverables (e.g. critique records read from a file).

        Same capacity, dedupe and persistence rules as graded samples."""
        items = await asyncio.gather(*item_refs)

        def fresh_items() -> list:  # duplicates take no room: a resumed put must not wait on them
            return [it for it in items if item_key(it) not in self._refs and item_key(it) not in self._acked]

        async with self._cond:
            await self._cond.wait_for(lambda: self._room_for(len(fresh_items())))
            fresh = fresh_items()
            self.deliverables.write([{"key": item_key(it), "item": encode_item(it)} for it in fresh])
            self._stats.duplicates_ignored += len(items) - len(fresh)
            self._stats.received += len(fresh)
            for it in fresh:
                ref = ray.put(it)
                self._refs[item_key(it)] = ref
                self._pending[item_key(it)] = ref
            self._stats.max_held = max(self._stats.max_held, self._held())
            self._cond.notify_all()
            return len(fresh)

    async def close(self) -> None:
        """No more puts are coming: flush incomplete groups (reported) and finish."""
        async with self._cond:
            leftovers = list(self._groups.values())
            self._groups.clear()
        try:
            for grp in leftovers:
                await self._emit(grp)
        finally:  # even when a write failed: consumers drain what exists and stop
            async with self._cond:
                self._closed = True
                self._closed_marker.touch()
                self._cond.notify_all()

    # ------------------------------------------------------------------ consumers

    async def take(self, consumer: str, max_items: int, timeout_s: float = 600.0) -> dict:
        """A disjoint batch for this consumer. `done` is true once nothing more can come."""
        # One deadline over taking the lock and waiting, in this task: asyncio.wait_for (3.11) would
        # run the wait as a task of its own, which, cancelled at the wrong moment, can end up
        # holding the lock after this call has gone, and every later call then waits forever.
        try:
            async with asyncio.timeout(timeout_s):
                await self._cond.acquire()
                try:
                    await self._cond.wait_for(lambda: self._pending or self._closed)
                except BaseException:
                    self._cond.release()
                    raise
        except TimeoutError:
            return {"lease": None, "items": [], "done": False}
        try:
            return self._lease(consumer, max_items)
        finally:
            self._cond.release()

    def _lease(self, consumer: str, max_items: int) -> dict:
        """Under the lock: up to max_items pending keys, leased to `consumer`."""
        keys = list(itertools.islice(self._pending.keys(), max_items))
        for k in keys:
            self._pending.pop(k)
        lease = next(self._lease_ids) if keys else None
        if keys:
            self._leases[lease] = (consumer, keys)
            self._stats.delivered += len(keys)
        self._cond.notify_all()
        return {"lease": lease, "items": [(k, self._refs[k]) for k in keys],
                "done": self._closed and not self._pending and not keys}

    async def ack(self, consumer: str, lease: int | None, keys: list[str], step: int) -> None:
        """Mark keys consumed at a training step. Keys, not just the lease, are named so
        that an ack still lands after a buffer restart has forgotten the lease."""
        async with self._cond:
            fresh = [k for k in keys if k not in self._acked]
            self.acks.write([{"key": k, "consumer": consumer, "step": step} for k in fresh])
            self._leases.pop(lease, None)
            for k in fresh:
                self._pending.pop(k, None)
                self._acked[k] = (consumer, step)
            self._stats.acked += len(fresh)
            self._cond.notify_all()

    async def rewind(self, consumer: str, step: int) -> int:
        """Return the consumer's open leases and its acks after `step` to the queue front."""
        async with self._cond:
            undone = [k for k, (c, s) in self._acked.items() if c == consumer and s > step]
            self.acks.write([{"key": k, "consumer": consumer, "step": -1, "undo": True} for k in undone])
            back: list[str] = []
            for lease, (c, keys) in list(self._leases.items()):
                if c == consumer:
                    back.extend(keys)
                    del self._leases[lease]
            for k in undone:
                del self._acked[k]
            back.extend(undone)
            self._stats.acked -= len(undone)
            for k in reversed(back):
                self._pending[k] = self._refs[k]
                self._pending.move_to_end(k, last=False)
            self._cond.notify_all()
            return len(back)

    # ------------------------------------------------------------------ observability

    def stats(self) -> dict:
        s = self._stats
        el = max(time.monotonic() - self._t0, 1e-6)
        s.depth = len(self._pending)
        s.grouping = sum(len(g) for g in self._groups.values())
        s.leased = sum(len(k) for _, k in self._leases.values())
        s.closed = self._closed
        s.finished = self._closed and not self._pending and not self._leases
        s.in_rate = s.received / el
        s.out_rate = s.acked / el
        decided = s.kept + s.rejected
        s.accept_rate = s.kept / decided if decided else None
        return dict(s.__dict__)

    def acked_keys(self) -> dict[str, int]:
        return {k: s for k, (_, s) in self._acked.items()}

    def ping(self) -> bool:
        return True


def encode_item(item: Any) -> dict:
    if isinstance(item, list):
        return {"__type__": "Group", "items": [to_json(g) for g in item]}
    return to_json(item)


def decode_item(d: dict) -> Any:
    if d.get("__type__") == "Group":
        return [from_json(g) for g in d["items"]]
    return from_json(d)


def item_key(item: Any) -> str:
    if isinstance(item, list):  # a whole group
        return f"group:{item[0].sample.problem.id}"
    return item.key
