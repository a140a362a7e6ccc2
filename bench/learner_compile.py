"""Does torch.compile pay for the learner's step on this CPU? Eager against compiled, same run.

One plain-torch SFT step of ours (bench/learner.py's profile_plain: the learner's log-prob code,
one row per sequence), on both data shapes, first eager, then with every decoder layer compiled
(`nn.Module.compile(dynamic=True)`: one graph serves every layer and every sequence length).
The first compiled step includes compiling; the rest are timed against the eager steps.
The matrix products are already at the CPU's GEMM peak (`matmul_bound` in learner.json), so
compilation can only fuse the elementwise rest of the step.

    ./dev bench learner_compile [--steps 3]
"""

from __future__ import annotations

import argparse
import time

from common import machine, write_result
from learner import MODEL, _commit, _records, build_data, one_pass_batch, profile_plain


def timed_steps(model_path: str, items: list, args, compiled: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if compiled:
        for layer in model.model.layers:
            layer.compile(dynamic=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
    batch = one_pass_batch(items, model_path, args)
    times = []
    for _ in range(args.steps + 1):
        t0 = time.perf_counter()
        profile_plain(model, opt, batch, "new")
        times.append(time.perf_counter() - t0)
    return {"first_step_seconds": times[0], "step_seconds": sum(times[1:]) / args.steps, "steps": times[1:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=8, help="sequences in the one timed batch")
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after the first")
    ap.add_argument("--lr", type=float, default=1e-6)
    args = ap.parse_args()
    args.micro_batch = args.items
    from core.models import resolve_model

    model_path = str(resolve_model(MODEL))
    result: dict = {"shapes": {}}
    for shape in ("short", "critic"):
        items = _records("sft", build_data(args.items, shape)[:args.items])
        eager = timed_steps(model_path, items, args, compiled=False)
        comp = timed_steps(model_path, items, args, compiled=True)
        result["shapes"][shape] = {"eager": eager, "compiled": comp,
                                   "speedup": eager["step_seconds"] / comp["step_seconds"],
                                   "compile_seconds": comp["first_step_seconds"] - eager["step_seconds"]}
        print(shape, round(result["shapes"][shape]["speedup"], 3), flush=True)
    result["settings"] = {"items": args.items, "max_len": args.max_len, "steps": args.steps, "model": MODEL,
                          "compile": "each decoder layer, nn.Module.compile(dynamic=True), inductor defaults"}
    result["machine"] = machine() | {"commit": _commit()}
    result["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write_result("learner_compile", result)


if __name__ == "__main__":
    main()
