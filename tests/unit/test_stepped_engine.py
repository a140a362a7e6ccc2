"""SteppedEngine's stepping loop (actors/engine.py): results reach their callers, and a failed step
fails every waiting call and the engine.

The loop runs against a stand-in for vLLM's LLMEngine, because a real engine cannot be made to
fail a step on demand; the real engine under this loop is tested in
tests/integration/test_rollout.py (one sampler there runs SteppedEngine).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass

import pytest

from actors.engine import EngineDead, SteppedEngine


@dataclass
class Output:
    request_id: str
    finished: bool
    prompt: str


class StandInCore:
    """Finishes one running request per step; the step numbered `fail_at` raises."""

    def __init__(self, fail_at: int | None = None, reject: dict[str, BaseException] | None = None):
        self.running: list[tuple[str, str]] = []
        self.steps = 0
        self.fail_at = fail_at
        self.reject = reject or {}  # prompt -> what add_request raises for it

    def add_request(self, rid: str, prompt: str, params) -> None:
        if prompt in self.reject:
            raise self.reject[prompt]
        self.running.append((rid, prompt))

    def has_unfinished_requests(self) -> bool:
        return bool(self.running)

    def step(self) -> list[Output]:
        self.steps += 1
        if self.steps == self.fail_at:
            raise RuntimeError("step failed")
        rid, prompt = self.running.pop(0)
        return [Output(rid, False, prompt), Output(rid, True, prompt)]  # only the finished one counts


def engine_over(core: StandInCore) -> SteppedEngine:
    eng = SteppedEngine.__new__(SteppedEngine)  # no tokenizer, no vLLM: only the loop
    eng.model_path, eng._closing, eng._failure, eng._inbox = "stand-in", False, None, queue.Queue()
    eng.rendered = lambda _core, prompt: prompt  # vLLM's renderer is the real engine's (test_rollout)
    eng._stepper = threading.Thread(target=eng._step_forever, args=(core,), daemon=True)
    eng._stepper.start()
    return eng


def test_each_call_gets_its_own_finished_output():
    eng = engine_over(StandInCore())

    async def run():
        return await asyncio.gather(*(eng._submit("add", f"p{i}", None) for i in range(5)))

    outs = asyncio.run(run())
    assert [o.prompt for o in outs] == [f"p{i}" for i in range(5)] and all(o.finished for o in outs)
    assert eng._failure is None
    eng._closing = True


def test_a_failed_step_fails_every_waiting_call_and_the_engine():
    eng = engine_over(StandInCore(fail_at=2))

    async def run():
        calls = asyncio.gather(*(eng._submit("add", f"p{i}", None) for i in range(3)), return_exceptions=True)
        return await asyncio.wait_for(calls, 30)  # a call never told of the failure fails here, not hangs

    first, *rest = asyncio.run(run())
    assert first.prompt == "p0"
    assert len(rest) == 2 and all(isinstance(e, RuntimeError) and "step failed" in str(e) for e in rest)
    assert isinstance(eng._failure, RuntimeError)

    async def later():
        return eng._submit("add", "p9", None)

    with pytest.raises(EngineDead, match="step failed"):
        asyncio.run(later())


def test_a_failed_call_fails_its_caller_only():
    eng = engine_over(StandInCore())

    def bad_swap(_core):
        raise FileNotFoundError("no such checkpoint")

    async def run():
        with pytest.raises(FileNotFoundError):
            await eng._submit("call", bad_swap)
        return await eng._submit("add", "after", None)

    assert asyncio.run(run()).prompt == "after" and eng._failure is None
    eng._closing = True


def test_a_rejected_request_fails_its_call_and_an_add_that_breaks_fails_the_engine():
    eng = engine_over(StandInCore(reject={"too long": ValueError("prompt too long"),
                                          "broken": RuntimeError("engine broke")}))

    async def run():
        with pytest.raises(ValueError, match="too long"):
            await asyncio.wait_for(eng._submit("add", "too long", None), 30)
        ok = await asyncio.wait_for(eng._submit("add", "fine", None), 30)
        with pytest.raises(RuntimeError, match="engine broke"):  # told, not left waiting
            await asyncio.wait_for(eng._submit("add", "broken", None), 30)
        return ok

    assert asyncio.run(run()).prompt == "fine"
    eng._stepper.join(timeout=30)
    assert isinstance(eng._failure, RuntimeError) and not eng._stepper.is_alive()
