"""The only module that calls vLLM's API.

vLLM changes its interface between releases; everything else in the project talks
to `Engine`, `SteppedEngine` or `AsyncEngine` (generate text from chat messages, switch checkpoints),
so an upgrade touches this file (and `vllm_cpu_top_p.py`, a plugin that vLLM loads
into its own processes and that reaches into its CPU sampler). Chat templating is
done here with the HF tokenizer, once per engine, and requests go in as token ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable


class EngineDead(RuntimeError):
    """The engine's core process is gone: this engine will never answer again."""


@dataclass
class Completion:
    prompt_token_ids: list[int]
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128


def _engine_kwargs(model_path: str, dtype: str, max_model_len: int, tensor_parallel_size: int, seed: int,
                   kv_cache_gib: float, gpu: bool, cpu_threads_bind: str, max_num_seqs: int | None) -> dict:
    from core.hardware import resolve_dtype

    if not gpu:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(round(kv_cache_gib))))
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind
        # On CPU, vLLM's model worker runs in the engine core's process (in the actor's own
        # process for the blocking Engine) instead of a process of its own: one import of torch
        # and vLLM fewer per engine start, and no hop between processes per step. Measured on
        # the tiny model: bench/engine_start.py. VLLM_ENABLE_V1_MULTIPROCESSING=1, set by the
        # user, keeps vLLM's own layout.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # Per-request seeds crash vLLM's CPU engine; we seed the engine instead.
    # Eager on CPU: torch.compile there costs ~75 s more per engine start (even with its
    # cache warm) for ~5% more tokens/s (bench/README.md).
    kw = dict(model=model_path, dtype=resolve_dtype(dtype), max_model_len=max_model_len, seed=seed,
              tensor_parallel_size=tensor_parallel_size, enforce_eager=not gpu,
              worker_extension_cls="actors.vllm_ext.WeightSwapExtension")
    return kw | ({"max_num_seqs": max_num_seqs} if max_num_seqs else {})


class _EngineBase:
    """Engine settings, chat templating and per-request token budgets, shared by both engine kinds."""

    def __init__(self, model_path: str, *, dtype: str = "auto", max_model_len: int = 768,
                 tensor_parallel_size: int = 1, seed: int = 0, kv_cache_gib: float = 1.0,
                 gpu: bool = False, cpu_threads_bind: str = "auto", max_num_seqs: int | None = None):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.max_model_len = max_model_len
        self.model_path = model_path
        self._closing = False
        self.llm = self._start(_engine_kwargs(model_path, dtype, max_model_len, tensor_parallel_size, seed,
                                              kv_cache_gib, gpu, cpu_threads_bind, max_num_seqs))

    def _start(self, vllm_kwargs: dict):
        raise NotImplementedError

    def _core_client(self):
        raise NotImplementedError

    def _core_procs(self) -> list:
        # Only a multiprocess client has core processes; an in-process one has no `resources`.
        manager = getattr(getattr(self._core_client(), "resources", None), "engine_manager", None)
        return list(getattr(manager, "processes", None) or [])

    def core_pids(self) -> list[int]:
        """PIDs of the engine-core processes (what an out-of-memory kill would hit)."""
        return [p.pid for p in self._core_procs()]

    def alive(self) -> bool:
        resources = getattr(self._core_client(), "resources", None)
        if resources is not None and resources.engine_dead:
            return False
        return all(p.is_alive() for p in self._core_procs())

    @contextlib.contextmanager
    def _dead_engine_check(self):
        """Turn any failure of a dead engine into EngineDead (vLLM raises EngineDeadError,
        or a socket error, depending on where the call was when the core died)."""
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            yield
        except Exception as e:
            if isinstance(e, EngineDeadError) or not self.alive():
                raise EngineDead(f"vLLM engine core for {self.model_path} is gone: {e!r}") from e
            raise

    def watch(self, on_death: Callable[[str], None], every_s: float = 1.0) -> None:
        """Call `on_death` once, from a daemon thread, when the engine core dies.

        A call in flight does not always see the death: vLLM's blocking client waits on
        its output queue forever once the core is gone, and an idle engine sees nothing."""

        def loop() -> None:
            while not self._closing:
                if not self.alive():
                    if not self._closing:
                        on_death(f"vLLM engine core for {self.model_path} died (pids {self.core_pids()})")
                    return
                time.sleep(every_s)

        threading.Thread(target=loop, name="engine-watchdog", daemon=True).start()

    def encode_chat(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def prepare(self, conversations: list[list[dict]], spec: SamplingSpec) -> tuple[list[list[int]], list[int]]:
        prompts, budgets = [], []
        for conv in conversations:
            ids = self.encode_chat(conv)
            room = self.max_model_len - len(ids)
            if room < 1:
                # Too long to answer: keep the tail of the prompt (the question end) so it
                # still produces a (likely ungradeable) response instead of failing the batch.
                ids = ids[-(self.max_model_len // 2):]
                room = self.max_model_len - len(ids)
            prompts.append(ids)
            budgets.append(min(spec.max_new_tokens, room))
        return prompts, budgets

    @staticmethod
    def rendered(engine, ids: list[int]):
        """A tokenized prompt as the engine's own renderer prepares it: vLLM 0.32 deprecates
        handing its engines raw prompts (AsyncLLM and LLMEngine; LLM.generate renders itself)."""
        from vllm.inputs import TokensPrompt
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        (engine_input,) = engine.renderer.render_cmpl(
            [parse_model_prompt(engine.model_config, TokensPrompt(prompt_token_ids=ids))])
        return engine_input

    @staticmethod
    def params(spec: SamplingSpec, budget: int, final_only: bool = False):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        extra = {"output_kind": RequestOutputKind.FINAL_ONLY} if final_only else {}
        return SamplingParams(n=spec.n, temperature=spec.temperature, top_p=spec.top_p, max_tokens=budget, **extra)

    @staticmethod
    def completions(prompt_ids: list[int], outputs) -> list[Completion]:
        ordered = sorted(outputs, key=lambda c: c.index)
        return [Completion(prompt_ids, c.text, list(c.token_ids), str(c.finish_reason)) for c in ordered]

    def _swapped(self, cleared: bool, model_path: str, t0: float) -> float:
        """Record a weight swap; seconds since t0. vLLM's reload keeps the prefix cache: keys and
        values computed by the old weights would be reused for any prompt that shares a full
        cached block with an earlier one, so a swap whose cache could not be cleared fails."""
        if not cleared:
            raise RuntimeError(f"loaded {model_path}, but vLLM could not clear its prefix cache "
                               f"(requests still running?): prompts would reuse the old weights' keys and values")
        self.model_path = model_path
        return time.perf_counter() - t0


class Engine(_EngineBase):
    """Blocking engine: one call runs to completion before the next starts."""

    def _start(self, vllm_kwargs: dict):
        from vllm import LLM

        return LLM(**vllm_kwargs)

    def _core_client(self):
        return self.llm.llm_engine.engine_core

    def generate(self, conversations: list[list[dict]], spec: SamplingSpec) -> list[list[Completion]]:
        """n completions per conversation, in input order."""
        from vllm.inputs import TokensPrompt

        prompts, budgets = self.prepare(conversations, spec)
        out: list[list[Completion]] = [None] * len(prompts)  # type: ignore[list-item]
        # Group by token budget so one SamplingParams serves each group.
        by_budget: dict[int, list[int]] = {}
        for i, b in enumerate(budgets):
            by_budget.setdefault(b, []).append(i)
        for budget, idxs in by_budget.items():
            with self._dead_engine_check():
                results = self.llm.generate([TokensPrompt(prompt_token_ids=prompts[i]) for i in idxs],
                                            self.params(spec, budget), use_tqdm=False)
            for i, res in zip(idxs, results):
                out[i] = self.completions(prompts[i], res.outputs)
        return out

    def shutdown(self) -> None:
        """Stop the engine-core process now; left to garbage collection it can outlive its user."""
        self._closing = True
        self.llm.llm_engine.engine_core.shutdown()

    def load_weights(self, model_path: str) -> float:
        """Swap in a new checkpoint of the same architecture; returns seconds taken."""
        t0 = time.perf_counter()
        with self._dead_engine_check():
            self.llm.collective_rpc("reload_and_repack", kwargs={"weights_path": model_path})
            cleared = self.llm.reset_prefix_cache()
        return self._swapped(cleared, model_path, t0)


class AsyncEngine(_EngineBase):
    """Continuous batching across calls: requests from concurrent `generate` calls join
    one running batch, so a call's slow tail overlaps the next call's work instead of
    leaving the engine half idle (which a blocking engine does at every call's end)."""

    def _start(self, vllm_kwargs: dict):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(AsyncEngineArgs(**vllm_kwargs, disable_log_stats=True))

    def _core_client(self):
        return self.llm.engine_core

    async def generate(self, conversations: list[list[dict]], spec: SamplingSpec) -> list[list[Completion]]:
        """n completions per conversation, in input order."""
        import asyncio

        prompts, budgets = self.prepare(conversations, spec)

        async def one(ids: list[int], budget: int) -> list[Completion]:
            final = None
            async for final in self.llm.generate(self.rendered(self.llm, ids),
                                                 self.params(spec, budget, final_only=True),
                                                 request_id=uuid.uuid4().hex):
                pass
            return self.completions(ids, final.outputs)

        with self._dead_engine_check():
            return list(await asyncio.gather(*(one(p, b) for p, b in zip(prompts, budgets))))

    async def load_weights(self, model_path: str) -> float:
        """Swap in a new checkpoint; the caller makes sure no request is running."""
        t0 = time.perf_counter()
        with self._dead_engine_check():
            await self.llm.collective_rpc("reload_and_repack", kwargs={"weights_path": model_path})
            cleared = await self.llm.reset_prefix_cache()
        return self._swapped(cleared, model_path, t0)


def sampler_engine_class(core: str, gpu: bool, environ=os.environ) -> type:
    """Which engine a sampler runs: `core` is "in_process", "own_process" or "auto".

    auto: in the sampler's process on CPU, where a process of its own only costs a start; on
    a GPU vLLM's AsyncLLM, whose core process schedules the next batch while the GPU computes.
    VLLM_ENABLE_V1_MULTIPROCESSING=1, set by the user, asks for vLLM's own layout."""
    if core == "auto":
        core = "own_process" if gpu or environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "1" else "in_process"
    if core not in ("in_process", "own_process"):
        raise ValueError(f"sampler engine core must be auto, in_process or own_process, not {core!r}")
    return SteppedEngine if core == "in_process" else AsyncEngine


class SteppedEngine(_EngineBase):
    """AsyncEngine's interface and continuous batching on vLLM's blocking engine, in the
    caller's process: a thread of ours steps it, and concurrent `generate` calls add their
    requests to its one running batch between steps.

    vLLM's AsyncLLM always runs its engine core in a process of its own; on CPU that is one
    more start of torch and vLLM per sampler for no gain in tokens/s (bench/engine_start.py).
    Every vLLM call happens on the stepping thread; the event loop only queues work for it.
    If a step raises, every waiting call fails and `alive()` turns false (the watchdog then
    ends the actor, as for a dead engine core)."""

    def _start(self, vllm_kwargs: dict):
        from vllm import EngineArgs
        from vllm.v1.engine.llm_engine import LLMEngine

        self._inbox: queue.Queue = queue.Queue()
        self._failure: BaseException | None = None
        engine = LLMEngine.from_engine_args(EngineArgs(**vllm_kwargs, disable_log_stats=True))
        self._stepper = threading.Thread(target=self._step_forever, args=(engine,), name="engine-stepper",
                                         daemon=True)
        self._stepper.start()
        return engine

    def _core_client(self):
        return self.llm.engine_core

    def alive(self) -> bool:
        return self._failure is None and super().alive()

    def _submit(self, *work) -> asyncio.Future:
        """Queue work for the stepping thread; its result arrives on the returned future."""
        if self._failure is not None:
            raise EngineDead(f"vLLM engine for {self.model_path} failed: {self._failure!r}")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._inbox.put((*work, loop, fut))
        return fut

    async def generate(self, conversations: list[list[dict]], spec: SamplingSpec) -> list[list[Completion]]:
        """n completions per conversation, in input order."""
        prompts, budgets = self.prepare(conversations, spec)
        futs = [self._submit("add", ids, self.params(spec, b, final_only=True))
                for ids, b in zip(prompts, budgets)]
        with self._dead_engine_check():
            finals = await asyncio.gather(*futs)
        return [self.completions(ids, final.outputs) for ids, final in zip(prompts, finals)]

    async def load_weights(self, model_path: str) -> float:
        """Swap in a new checkpoint; the caller makes sure no request is running."""
        t0 = time.perf_counter()

        def swap(engine) -> bool:
            engine.collective_rpc("reload_and_repack", kwargs={"weights_path": model_path})
            return engine.reset_prefix_cache()

        with self._dead_engine_check():
            cleared = await self._submit("call", swap)
        return self._swapped(cleared, model_path, t0)

    def shutdown(self) -> None:
        self._closing = True
        self._stepper.join(timeout=60)  # a step in progress (or a 1 s wait for work) ends before the core goes
        self.llm.engine_core.shutdown()

    def _step_forever(self, engine) -> None:
        waiting: dict[str, tuple] = {}  # request id -> (loop, future)
        try:
            while not self._closing:
                self._take_work(engine, waiting, block=not engine.has_unfinished_requests())
                if engine.has_unfinished_requests():
                    for out in engine.step():
                        if out.finished:
                            _settle(*waiting.pop(out.request_id), out)
        except BaseException as e:  # noqa: BLE001 - every waiting call must hear of it
            self._failure = e
            for entry in list(waiting.values()) + _drain(self._inbox):
                _settle(*entry[-2:], error=e)

    def _take_work(self, engine, waiting: dict, block: bool) -> None:
        """Start what was queued; wait for work only when nothing is running."""
        while True:
            try:
                item = self._inbox.get(timeout=1.0) if block else self._inbox.get_nowait()
            except queue.Empty:
                return
            block = False
            if item[0] == "add":
                rid = uuid.uuid4().hex
                try:
                    engine.add_request(rid, self.rendered(engine, item[1]), item[2])
                    waiting[rid] = item[-2:]
                except ValueError as e:  # a request vLLM rejects fails its call only
                    _settle(*item[-2:], error=e)
                except BaseException as e:  # the engine fails; this call, already off the inbox, hears of it too
                    _settle(*item[-2:], error=e)
                    raise
            else:  # "call"
                try:
                    _settle(*item[-2:], item[1](engine))
                except Exception as e:  # a failed weight load fails its caller, not the engine
                    _settle(*item[-2:], error=e)


def _settle(loop, fut, result=None, error: BaseException | None = None) -> None:
    """Hand a result (or an error) from the stepping thread to the caller's event loop."""

    def done() -> None:
        if not fut.done():
            fut.set_exception(error) if error is not None else fut.set_result(result)

    loop.call_soon_threadsafe(done)


def _drain(q: queue.Queue) -> list:
    items = []
    while True:
        try:
            item = q.get_nowait()
        except queue.Empty:
            return items
        items.append(item)
