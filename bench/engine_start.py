"""vLLM engine start-up and generation on CPU: the engine in its caller's process (the project's
default) against vLLM's own layout (engine core and model worker in processes of their own), and
the samplers' two engines: AsyncLLM (always one engine-core process) and SteppedEngine (vLLM's
blocking engine stepped by a thread in the caller's process, the CPU default since this bench).

Each case runs in a fresh Python process, since vLLM reads VLLM_ENABLE_V1_MULTIPROCESSING when
an engine starts and its plugins load once per process. Start seconds count from the engine's
constructor to its return (tokenizer, config, processes, weights, KV cache); generation is one
batch of sampled answers; CPU seconds are the whole case's, its engine processes included (what
a start costs a busy 2-core machine). Prints JSON and writes bench/results/engine_start.json.

    ./dev bench engine_start [--model tiny|embedded] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, machine, write_result

CASES = {  # name: (engine class, VLLM_ENABLE_V1_MULTIPROCESSING)
    "engine_separate": ("Engine", "1"), "engine_in_process": ("Engine", "0"),
    "async_separate": ("AsyncEngine", "1"), "async_in_process": ("AsyncEngine", "0"),
    "stepped_in_process": ("SteppedEngine", "0"),
}


def one_case(kind: str, model_path: str, prompts: int, n: int, max_new: int) -> dict:
    """Runs in the child process: start an engine, sample once, report seconds and tokens."""
    import asyncio
    import time

    from actors import engine as engines
    from actors.engine import SamplingSpec

    convs = [[{"role": "user", "content": f"What is {i} plus {2 * i}? Explain."}] for i in range(prompts)]
    spec = SamplingSpec(n=n, temperature=1.0, top_p=1.0, max_new_tokens=max_new)
    t0 = time.perf_counter()
    eng = getattr(engines, kind)(model_path, max_model_len=512, kv_cache_gib=1.0, dtype="float32", seed=0)
    t1 = time.perf_counter()
    out = eng.generate(convs, spec) if kind == "Engine" else asyncio.run(eng.generate(convs, spec))
    t2 = time.perf_counter()
    tokens = sum(len(c.token_ids) for row in out for c in row)
    eng.llm.shutdown() if kind == "AsyncEngine" else eng.shutdown()  # no engine process outlives the case
    return {"start_s": t1 - t0, "generate_s": t2 - t1, "tokens": tokens, "tok_per_s": tokens / (t2 - t1)}


def run_child(case: str, args) -> dict:
    kind, mp = CASES[case]
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING=mp)
    with tempfile.TemporaryDirectory() as d:
        out, log = Path(d) / "out.json", Path(d) / "log.txt"
        cmd = [sys.executable, __file__, "--child", kind, "--out", str(out), "--model-path", args.model_path,
               "--prompts", str(args.prompts), "--n", str(args.n), "--max-new-tokens", str(args.max_new_tokens)]
        before = _children_cpu()
        with open(log, "w") as f:  # a file, not a pipe: a stray engine process cannot hold it open
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=900).returncode
        if rc != 0 or not out.exists():
            raise RuntimeError(f"{case} failed (exit {rc}): {log.read_text()[-3000:]}")
        return json.loads(out.read_text()) | {"cpu_s": _children_cpu() - before}


def _children_cpu() -> float:
    """CPU seconds of every finished child (and the children they waited for) so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def summarise(runs: list[dict]) -> dict:
    keys = ("start_s", "generate_s", "tok_per_s", "cpu_s")
    return {k: round(statistics.mean(r[k] for r in runs), 2) for k in keys} | \
        {"start_s_each": [round(r["start_s"], 2) for r in runs], "cpu_s_each": [round(r["cpu_s"], 2) for r in runs]}


def model_path_for(which: str) -> str:
    from core.models import build_tiny_model, resolve_model

    # the tests' tiny model is built here if missing
    return resolve_model("embedded") if which == "embedded" else str(build_tiny_model())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["tiny", "embedded"], default="tiny")
    ap.add_argument("--model-path", default="")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--child", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.child:
        Path(args.out).write_text(json.dumps(one_case(args.child, args.model_path, args.prompts, args.n,
                                                      args.max_new_tokens)))
        os._exit(0)  # an engine left to garbage collection can hold the process open
    args.model_path = args.model_path or model_path_for(args.model)
    cases = {c: summarise([run_child(c, args) for _ in range(args.repeats)]) for c in CASES}
    ratios = {kind: {"start_speedup": cases[f"{kind}_separate"]["start_s"] / cases[f"{kind}_in_process"]["start_s"],
                     "tok_per_s_ratio": cases[f"{kind}_in_process"]["tok_per_s"] / cases[f"{kind}_separate"]["tok_per_s"]}
              for kind in ("engine", "async")}
    stepped, async_ = cases["stepped_in_process"], cases["async_in_process"]
    sampler = {"start_speedup": async_["start_s"] / stepped["start_s"], "cpu_ratio": async_["cpu_s"] / stepped["cpu_s"],
               "tok_per_s_ratio": stepped["tok_per_s"] / async_["tok_per_s"]}
    from pipelines.results import git_commit

    write_result("engine_start", {"machine": machine(), "commit": git_commit(), "model": args.model,
                                  "settings": {k: getattr(args, k) for k in ("repeats", "prompts", "n", "max_new_tokens")},
                                  "cases": cases, "in_process_vs_separate": ratios,
                                  "sampler_stepped_vs_async": sampler})


if __name__ == "__main__":
    main()
