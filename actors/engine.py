"""The only module that knows vLLM's API.

vLLM changes its interface between releases; everything else in the project talks
to `Engine` (generate text from chat messages, switch checkpoints), so an upgrade
touches this file alone. Chat templating is done here with the HF tokenizer, once
per engine, and requests go in as token ids.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


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


class Engine:
    def __init__(self, model_path: str, *, dtype: str = "auto", max_model_len: int = 768,
                 tensor_parallel_size: int = 1, seed: int = 0, kv_cache_gib: float = 1.0,
                 gpu: bool = False, cpu_threads_bind: str = "auto"):
        from transformers import AutoTokenizer
        from vllm import LLM

        from core.hardware import resolve_dtype

        dtype = resolve_dtype(dtype)
        if not gpu:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(round(kv_cache_gib))))
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.max_model_len = max_model_len
        kwargs = dict(model=model_path, dtype=dtype, max_model_len=max_model_len, seed=seed,
                      tensor_parallel_size=tensor_parallel_size, enforce_eager=not gpu)
        # Per-request seeds crash vLLM's CPU engine; we seed the engine instead.
        self.llm = LLM(**kwargs)
        self.model_path = model_path

    def encode_chat(self, messages: list[dict]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def generate(self, conversations: list[list[dict]], spec: SamplingSpec) -> list[list[Completion]]:
        """n completions per conversation, in input order."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

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
        out: list[list[Completion]] = [None] * len(prompts)  # type: ignore[list-item]
        # Group by token budget so one SamplingParams serves each group.
        by_budget: dict[int, list[int]] = {}
        for i, b in enumerate(budgets):
            by_budget.setdefault(b, []).append(i)
        for budget, idxs in by_budget.items():
            params = SamplingParams(n=spec.n, temperature=spec.temperature, top_p=spec.top_p,
                                    max_tokens=budget)
            results = self.llm.generate([TokensPrompt(prompt_token_ids=prompts[i]) for i in idxs],
                                        params, use_tqdm=False)
            for i, res in zip(idxs, results):
                out[i] = [Completion(prompts[i], c.text, list(c.token_ids), str(c.finish_reason))
                          for c in res.outputs]
        return out

    def load_weights(self, model_path: str) -> float:
        """Swap in a new checkpoint of the same architecture; returns seconds taken."""
        t0 = time.perf_counter()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": model_path})
        self.model_path = model_path
        return time.perf_counter() - t0
