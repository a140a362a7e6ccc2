"""Rollout throughput: the streaming pool vs plain transformers.generate vs one raw vLLM engine.

Same prompts and sampling settings for all three, on the embedded default model.
Prints JSON and writes bench/results/rollout.json.

    ./dev bench rollout [--prompts 32] [--n 8] [--max-new-tokens 96] [--batch-prompts 16] [--samplers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from common import machine, write_result

# The top-p comparison loads vLLM's plugins in one engine and not in the other, and a process
# reads VLLM_PLUGINS once: so here every engine keeps processes of its own, vLLM's layout
# (the project's engines run in-process on CPU: bench/engine_start.py).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1")


def bench_generate(model_path: str, convs: list, n: int, max_new: int, temperature: float, batch: int,
                   dtype: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
    texts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs for _ in range(n)]
    tokens = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, do_sample=True, temperature=temperature, top_p=0.95,
                                 max_new_tokens=max_new, pad_token_id=tok.pad_token_id or tok.eos_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            eos = tok.eos_token_id
            for row in new.tolist():  # count up to and including the first EOS, like vLLM does
                tokens += next((j + 1 for j, t in enumerate(row) if t == eos), len(row))
    secs = time.perf_counter() - t0
    return {"tok_per_s": tokens / secs, "tokens": tokens, "seconds": secs, "batch": batch, "dtype": dtype}


def engine_settings(max_num_seqs: int | None) -> dict:
    """The same engine settings for the pool's actors and the raw engine."""
    return dict(max_model_len=768, kv_cache_gib=2, cpu_threads_bind="0-1", max_num_seqs=max_num_seqs)


def bench_raw_engine(model_path: str, convs: list, spec, max_num_seqs: int | None, top_p_plugin: bool = True) -> dict:
    """`top_p_plugin=False` runs vLLM's own sort-based top-p (our vLLM plugin not loaded)."""
    from actors.engine import Engine

    # The engine's processes start now and read VLLM_PLUGINS once; "none" names no plugin.
    saved = os.environ.pop("VLLM_PLUGINS", None)
    if not top_p_plugin:
        os.environ["VLLM_PLUGINS"] = "none"
    try:
        eng = Engine(model_path, **engine_settings(max_num_seqs))
    finally:
        os.environ.pop("VLLM_PLUGINS", None)
        if saved is not None:
            os.environ["VLLM_PLUGINS"] = saved
    eng.generate(convs[:2], spec)  # warm-up
    t0 = time.perf_counter()
    outs = eng.generate(convs, spec)
    secs = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o)
    # An unreleased engine kept this process (and ~4 GB) alive after the results were written.
    eng.shutdown()
    return {"tok_per_s": tokens / secs, "tokens": tokens, "seconds": secs, "samples": sum(len(o) for o in outs)}


def bench_pool(model_path: str, problems: list, spec, samplers: int, batch_prompts: int,
               max_num_seqs: int | None) -> dict:
    import tempfile

    import ray

    from actors.buffer import Buffer
    from actors.critic import CriticWorker
    from actors.pool import ActorPool
    from actors.sampler import SamplerWorker
    from actors.stream import run_rollout
    from core.config import ModelConfig

    ray.init(address="local", num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {
        k: os.environ[k] for k in ("SELFCRITIQUE_CACHE", "HF_HUB_OFFLINE", "PYTHONPATH") if k in os.environ}})
    eng = engine_settings(max_num_seqs)
    pool = ActorPool(SamplerWorker, samplers, (model_path, "base", eng, ModelConfig().system_prompt), num_cpus=1)
    critics = ActorPool(CriticWorker, 1, ("rule", None, "base", eng), num_cpus=0.5)
    pool.wait_ready()
    critics.wait_ready()
    with tempfile.TemporaryDirectory() as d:
        warm = Buffer.remote(d + "/warm", 10_000)
        run_rollout(problems[:2], pool, critics, warm, spec, batch_prompts)
        buf = Buffer.remote(d + "/run", 10_000)
        rep = run_rollout(problems, pool, critics, buf, spec, batch_prompts)
        stats = ray.get(buf.stats.remote())
    ray.shutdown()
    return {"tok_per_s": rep.tokens_per_s, "graded_per_s": rep.graded / rep.wall_seconds, "tokens": rep.tokens,
            "graded": rep.graded, "seconds": rep.wall_seconds, "samplers": samplers, "accepted": stats["received"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    # Defaults: the CPU demo's sampling (n=8, 96 new tokens, 16 prompts a call); two calls of 128 sequences.
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--samplers", type=int, default=1)
    ap.add_argument("--batch-prompts", type=int, default=16)
    ap.add_argument("--generate-batch", type=int, default=64)
    ap.add_argument("--max-num-seqs", type=int, default=128, help="engine setting for pool and raw engine; 0 = vLLM's")
    ap.add_argument("--skip-fp32-generate", action="store_true",
                    help="only the bf16 generate baseline the issue names")
    ap.add_argument("--skip-vllm-sort", action="store_true",
                    help="skip the raw engine run with vLLM's own top-p sort (our plugin off)")
    ap.add_argument("--pool-only", action="store_true",
                    help="time the pool alone and print it (for tuning); writes no result file")
    args = ap.parse_args()

    from actors.engine import SamplingSpec
    from core.config import ModelConfig
    from core.models import resolve_model
    from core.problem_gen import generate_problems
    from core.prompts import solver_messages

    model = resolve_model("embedded:smollm2-135m-instruct")
    problems = generate_problems(args.prompts, "train", (1, 2), 123)
    convs = [solver_messages(p, ModelConfig().system_prompt) for p in problems]
    spec = SamplingSpec(n=args.n, temperature=args.temperature, top_p=0.95, max_new_tokens=args.max_new_tokens)
    mns = args.max_num_seqs or None
    pool = bench_pool(model, problems, spec, args.samplers, args.batch_prompts, mns)
    if args.pool_only:
        print(json.dumps(pool, indent=2))
        return
    raw = bench_raw_engine(model, convs, spec, mns)
    raw_sort = None if args.skip_vllm_sort else bench_raw_engine(model, convs, spec, mns, top_p_plugin=False)
    gen = bench_generate(model, convs, args.n, args.max_new_tokens, args.temperature, args.generate_batch,
                         "bfloat16")
    # This CPU has no native bf16, so the bf16 baseline is slow; fp32 generate is the fairer one here.
    gen32 = None if args.skip_fp32_generate else bench_generate(
        model, convs, args.n, args.max_new_tokens, args.temperature, args.generate_batch, "float32")
    write_result("rollout", {
        "pool_tok_per_s": pool["tok_per_s"], "pool_graded_samples_per_s": pool["graded_per_s"],
        "generate_tok_per_s": gen["tok_per_s"], "raw_engine_tok_per_s": raw["tok_per_s"],
        "ratio_vs_generate": pool["tok_per_s"] / gen["tok_per_s"],
        "ratio_vs_raw_engine": pool["tok_per_s"] / raw["tok_per_s"],
        "generate_fp32_tok_per_s": gen32 and gen32["tok_per_s"],
        "ratio_vs_generate_fp32": gen32 and pool["tok_per_s"] / gen32["tok_per_s"],
        # What actors/vllm_cpu_top_p.py buys: the same raw engine with vLLM's full-vocabulary sort.
        "raw_engine_vllm_sort_tok_per_s": raw_sort and raw_sort["tok_per_s"],
        "top_p_plugin_speedup": raw_sort and raw["tok_per_s"] / raw_sort["tok_per_s"],
        "settings": {"prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens,
                     "temperature": args.temperature, "samplers": args.samplers,
                     "batch_prompts": args.batch_prompts, "max_num_seqs": mns, "model": "SmolLM2-135M-Instruct (embedded)"},
        "pool": pool, "raw_engine": raw, "raw_engine_vllm_sort": raw_sort, "generate": gen, "generate_fp32": gen32, "machine": machine(),
    })


if __name__ == "__main__":
    main()
