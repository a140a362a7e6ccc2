"""A pool of identical actors with least-outstanding dispatch and failure bookkeeping.

The pool's one recovery path is "the actor died": Ray restarts it (max_restarts), its
calls in flight fail, and the caller re-dispatches them. Other faults are turned into
that one: a worker whose engine died ends its own process (`end_for_restart`), and
the caller kills an actor that missed a call deadline (`kill_hung`).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
from typing import Any, NoReturn

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

ACTOR_FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError)


def end_for_restart(reason: str) -> NoReturn:
    """End this actor's process so that Ray restarts it.

    os._exit, not ray.actor.exit_actor: Ray never restarts an actor that exited on
    purpose. Child processes (an engine core that is hung rather than dead) go first,
    so that the restarted actor does not share the machine with them.
    """
    import psutil

    print(f"{reason}; ending actor process {os.getpid()} so that Ray restarts it", file=sys.stderr, flush=True)
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass
    os._exit(70)


def restart_on_engine_death(method):
    """Decorate a worker method: an EngineDead inside it ends the actor (see end_for_restart)."""
    from actors.engine import EngineDead

    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def guarded_async(*args, **kwargs):
            try:
                return await method(*args, **kwargs)
            except EngineDead as e:
                end_for_restart(str(e))
        return guarded_async

    @functools.wraps(method)
    def guarded(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except EngineDead as e:
            end_for_restart(str(e))
    return guarded


class ActorPool:
    """N actors of one worker class.

    Ray restarts a dead actor (max_restarts); its in-flight calls fail and the caller
    re-dispatches them. Until a restarted actor answers a ping it gets no new work.
    """

    def __init__(self, worker_cls: type, size: int, init_args: tuple, *, num_cpus: float = 1,
                 num_gpus: float = 0, resources: dict | None = None, max_restarts: int = 3,
                 name: str = "pool", runtime_env: dict | None = None, scheduling_strategy=None,
                 init_args_each: list[tuple] | None = None):
        """init_args_each: one constructor tuple per actor, instead of init_args for all."""
        opts: dict[str, Any] = dict(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=max_restarts,
                                    max_task_retries=0, resources=resources or {})
        if runtime_env:
            opts["runtime_env"] = runtime_env
        if scheduling_strategy is not None:
            opts["scheduling_strategy"] = scheduling_strategy
        self._cls = ray.remote(worker_cls).options(**opts)
        if init_args_each is not None and len(init_args_each) != size:
            raise ValueError(f"{name}: {len(init_args_each)} constructor argument tuples for {size} actors")
        each = init_args_each or [init_args] * size
        self._adopt([self._cls.remote(*args) for args in each], name)

    @classmethod
    def over(cls, actors: list, name: str = "pool") -> "ActorPool":
        """A view over actors another pool owns (a Ray Tune trial using the driver's samplers):
        its own dispatch books, the same actors. Never shut a view down: that kills them."""
        pool = cls.__new__(cls)
        pool._adopt(actors, name)
        return pool

    def _adopt(self, actors: list, name: str) -> None:
        self.name = name
        self.actors = list(actors)
        self.outstanding = [0] * len(self.actors)
        self._suspect: dict[int, ray.ObjectRef] = {}  # index -> ping ref after a failure
        self.failures = 0
        self.hung_kills = 0

    def __len__(self) -> int:
        return len(self.actors)

    def wait_ready(self, timeout: float | None = None) -> list[int]:
        """Block until every actor has built its engine, a restarting one too; returns their pids."""
        t0 = time.monotonic()
        while True:
            try:
                return ray.get([a.ping.remote() for a in self.actors], timeout=timeout)
            except ActorUnavailableError:  # a call to a restarting actor fails at once
                if timeout is not None and time.monotonic() - t0 > timeout:
                    raise
                time.sleep(0.5)

    def _refresh_suspects(self) -> None:
        for i, ref in list(self._suspect.items()):
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                try:
                    ray.get(ref)
                    del self._suspect[i]  # restarted and answering
                except ACTOR_FAILURES:
                    self._suspect[i] = self.actors[i].ping.remote()

    def available(self) -> list[int]:
        self._refresh_suspects()
        return [i for i in range(len(self.actors)) if i not in self._suspect]

    def least_loaded(self) -> int | None:
        live = self.available()
        return min(live, key=lambda i: self.outstanding[i]) if live else None

    def submit(self, index: int, method: str, *args, num_returns: int = 1):
        self.outstanding[index] += 1
        return getattr(self.actors[index], method).options(num_returns=num_returns).remote(*args)

    def finished(self, index: int) -> None:
        self.outstanding[index] -= 1

    def mark_failed(self, index: int) -> None:
        self.failures += 1
        self._suspect[index] = self.actors[index].ping.remote()

    def kill_hung(self, index: int) -> None:
        """An actor that missed a call deadline is treated as dead: killed and restarted.
        Its calls in flight then fail like any dead actor's and are re-dispatched."""
        self.hung_kills += 1
        ray.kill(self.actors[index], no_restart=False)

    def call_all(self, method: str, *args, timeout: float | None = None) -> list:
        return ray.get([getattr(a, method).remote(*args) for a in self.actors], timeout=timeout)

    def wait_any_alive(self, timeout: float = 900.0) -> None:
        t0 = time.monotonic()
        while not self.available():
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.name}: no actor came back within {timeout:.0f}s")
            time.sleep(0.2)

    def shutdown(self) -> None:
        if not ray.is_initialized():
            return  # the cluster is already gone, and its actors with it
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
