"""Stand-in sampler and critic workers with a fixed latency instead of a model.

They speak the same interface as SamplerWorker/CriticWorker, so load tests and the
scale benchmark exercise the real pool, streaming driver and buffer at rates a
GPU fleet would produce, on a machine without one. `hang_once` makes a sampler hang
(the fault tests' stand-in for a stuck engine).
"""

from __future__ import annotations

import os
import time

from core.records import Grade, GradedSample, Sample


class SyntheticSampler:
    def __init__(self, latency: float = 0.0, tokens: int = 128, text_chars: int = 400, hang_once: str = ""):
        self.latency, self.tokens, self.text_chars, self.pid = latency, tokens, text_chars, os.getpid()
        self.hang_once = hang_once  # a marker file: the first call of any actor to create it never returns

    def _maybe_hang(self) -> None:
        try:
            with open(self.hang_once, "x"):
                pass
        except FileExistsError:
            return
        while True:  # blocks the actor, pings included, until it is killed
            time.sleep(60)

    def generate(self, problems, spec, checkpoint=None):
        if self.hang_once:
            self._maybe_hang()
        time.sleep(self.latency)
        samples = [Sample(p, i, f"{p.id} {i} " + "x" * self.text_chars, list(range(self.tokens)), [], "synthetic",
                          "stop") for p in problems for i in range(spec.n)]
        return {"samples": len(samples), "tokens": len(samples) * self.tokens, "seconds": self.latency,
                "pid": self.pid}, samples

    def ping(self) -> int:
        return self.pid


class SyntheticCritic:
    def __init__(self, latency: float = 0.0):
        self.latency, self.pid = latency, os.getpid()

    def grade(self, samples, checkpoint=None):
        time.sleep(self.latency)
        graded = [GradedSample(s, Grade(9.0 if s.sample_index % 2 == 0 else 2.0,
                                        "correct" if s.sample_index % 2 == 0 else "incorrect", "", "synthetic"))
                  for s in samples]
        return {"graded": len(graded), "ungraded": 0, "judged": 0, "seconds": self.latency, "pid": self.pid}, graded

    def ping(self) -> int:
        return self.pid
