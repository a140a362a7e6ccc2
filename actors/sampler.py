"""Sampler actor: one vLLM engine generating n responses per problem."""

from __future__ import annotations

import os
import time

from actors.engine import Engine, SamplingSpec
from core.prompts import solver_messages
from core.records import Problem, Sample


class SamplerWorker:
    """Plain class; the pool wraps it with ray.remote and the resources it needs.

    `generate` returns two objects (num_returns=2): a small summary the driver reads
    to account and detect failures, and the samples themselves, which stay in the
    object store and go straight to a critic.
    """

    def __init__(self, model_path: str, policy_version: str, engine_kwargs: dict, system_prompt: str):
        self.engine = Engine(model_path, **engine_kwargs)
        self.version = policy_version
        self.system_prompt = system_prompt
        self.pid = os.getpid()

    def ensure_checkpoint(self, model_path: str, version: str) -> float:
        """Switch weights in place when the stage moved on (also after a restart)."""
        if version == self.version:
            return 0.0
        secs = self.engine.load_weights(model_path)
        self.version = version
        return secs

    def generate(self, problems: list[Problem], spec: SamplingSpec, checkpoint: tuple[str, str] | None = None):
        if checkpoint:
            self.ensure_checkpoint(*checkpoint)
        t0 = time.perf_counter()
        outs = self.engine.generate([solver_messages(p, self.system_prompt) for p in problems], spec)
        samples = [
            Sample(p, i, c.text, c.token_ids, c.prompt_token_ids, self.version, c.finish_reason)
            for p, comps in zip(problems, outs)
            for i, c in enumerate(comps)
        ]
        secs = time.perf_counter() - t0
        summary = {"samples": len(samples), "tokens": sum(len(s.token_ids) for s in samples),
                   "seconds": secs, "pid": self.pid, "version": self.version}
        return summary, samples

    def ping(self) -> int:
        return self.pid
