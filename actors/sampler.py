"""Sampler actor: one vLLM engine generating n responses per problem."""

from __future__ import annotations

import asyncio
import os
import time

from actors.engine import SamplingSpec, sampler_engine_class
from actors.pool import end_for_restart, restart_on_engine_death
from core.prompts import solver_messages
from core.records import Problem, Sample


class SamplerWorker:
    """Plain class; the pool wraps it with ray.remote and the resources it needs.

    An async actor: the pool keeps several calls in flight per actor, and their requests
    share the engine's running batch (continuous batching across calls).

    `generate` returns two objects (num_returns=2): a small summary the driver reads
    to account and detect failures, and the samples themselves, which stay in the
    object store and go straight to a critic.

    An engine that dies (its core process killed, say for memory, or a step that raised)
    ends the actor, so that Ray restarts it with a fresh engine and the pool re-dispatches
    its calls. On CPU the engine runs in the actor's own process (engine.sampler_engine_class).
    """

    def __init__(self, model_path: str, policy_version: str, engine_kwargs: dict, system_prompt: str,
                 engine_core: str = "auto"):
        engine_cls = sampler_engine_class(engine_core, engine_kwargs.get("gpu", False))
        self.engine = engine_cls(model_path, **engine_kwargs)
        self.engine.watch(end_for_restart)
        self.version = policy_version
        self.system_prompt = system_prompt
        self.pid = os.getpid()
        self._active = 0  # generate calls running on the current weights
        self._swap = asyncio.Lock()  # held while a call starts or the weights change

    async def _switch(self, model_path: str, version: str) -> float:
        if version == self.version:
            return 0.0
        while self._active:  # calls on the old weights finish first; none start meanwhile
            await asyncio.sleep(0.01)
        secs = await self.engine.load_weights(model_path)
        self.version = version
        return secs

    @restart_on_engine_death
    async def ensure_checkpoint(self, model_path: str, version: str) -> float:
        """Switch weights in place when the stage moved on (also after a restart)."""
        async with self._swap:
            return await self._switch(model_path, version)

    @restart_on_engine_death
    async def generate(self, problems: list[Problem], spec: SamplingSpec,
                       checkpoint: tuple[str, str] | None = None):
        async with self._swap:
            if checkpoint:
                await self._switch(*checkpoint)
            self._active += 1
            version = self.version
        try:
            started, t0 = time.time(), time.perf_counter()
            outs = await self.engine.generate([solver_messages(p, self.system_prompt) for p in problems], spec)
            secs = time.perf_counter() - t0
        finally:
            self._active -= 1
        samples = [
            Sample(p, i, c.text, c.token_ids, c.prompt_token_ids, version, c.finish_reason)
            for p, comps in zip(problems, outs)
            for i, c in enumerate(comps)
        ]
        summary = {"samples": len(samples), "tokens": sum(len(s.token_ids) for s in samples),
                   "seconds": secs, "started": started, "finished": started + secs, "pid": self.pid,
                   "version": version}
        return summary, samples

    def ping(self) -> int:
        return self.pid

    def in_flight(self) -> int:
        """generate calls running on the engine now."""
        return self._active
