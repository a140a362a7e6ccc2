"""Learner throughput on the embedded default: SFT step, DPO step with cached reference
log-probs, DPO step that runs the reference model each step, plus the machine's matmul
peak for model-FLOPs utilisation. Prints JSON and writes bench/results/learner.json.

Runs the learner's own forward/backward code (learners.trainer) on one DeepSpeed engine
in this process, so the timing is the step itself, not Ray Train start-up.

    ./dev bench learner [--steps 6] [--micro-batch 8] [--seq 192]
"""

from __future__ import annotations

import argparse
import os
import time

from common import machine, write_result


def matmul_gflops(dtype, n: int = 2048, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=192, help="approximate tokens per sequence")
    args = ap.parse_args()
    for k, v in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533").items():
        os.environ.setdefault(k, v)

    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.models import resolve_model
    from core.records import Pair, Problem, SFTExample
    from learners import ds_engine
    from learners.trainer import LearnJob, _forward_dpo, _forward_sft
    from learners.ref_scorer import ReferenceScorer

    dist.init_process_group("gloo", rank=0, world_size=1)
    model_path = resolve_model("embedded:smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(model_path)
    bf16 = ds_engine.bf16_supported()
    words = " ".join(["step"] * (args.seq // 2))
    msgs = [[{"role": "user", "content": f"Question {i}: {words}"}] for i in range(args.micro_batch)]
    sft_items = [SFTExample(f"k{i}", m, f"The answer is {i}. " + words) for i, m in enumerate(msgs)]
    pairs = [Pair(Problem(f"p{i}", "q"), m, f"The answer is {i}. " + words, f"Maybe {i + 3}. " + words, 9, 2, "a", "b")
             for i, m in enumerate(msgs)]
    pairs = ReferenceScorer(model_path, max_len=args.seq * 2).enrich(pairs)

    def run(kind: str, items, ref_mode: str = "cached") -> dict:
        job = LearnJob(name="bench", kind=kind, model_path=model_path, out_dir="", storage_dir="", buffer=None,
                       lr=1e-6, micro_batch_size=args.micro_batch, max_len=args.seq * 2, ref_mode=ref_mode, bf16=bf16)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        conf = ds_engine.ds_config(micro_batch_size=args.micro_batch, grad_accum=1, world_size=1, zero_stage=2,
                                   bf16=bf16)
        engine = ds_engine.init_engine(model, conf, job.lr, 0)
        ref = None
        if ref_mode == "per_step":
            ref = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if bf16 else torch.float32)
            ref.eval().requires_grad_(False)
        fwd = _forward_sft if kind == "sft" else _forward_dpo
        times, toks = [], 0
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            loss, _, ntok = fwd(engine, tok, items, job, *([ref] if ref is not None else []))
            engine.backward(loss)
            engine.step()
            if step:  # the first step pays for allocation; leave it out
                times.append(time.perf_counter() - t0)
                toks += ntok
        # tokens through the policy: every position of every sequence in the batch
        enc_tokens = sum(min(len(tok.apply_chat_template(m, add_generation_prompt=True)) + args.seq, args.seq * 2)
                         for m in msgs) * (2 if kind == "dpo" else 1)
        del engine, model, ref
        secs = sum(times) / len(times)
        return {"step_seconds": secs, "tok_per_s": enc_tokens / secs, "response_tok_per_s": toks / len(times) / secs}

    sft = run("sft", sft_items)
    dpo = run("dpo", pairs)
    dpo_ref = run("dpo", pairs, "per_step")
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_path).parameters())
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    dtype = "bf16" if bf16 else "fp32"
    # Training costs ~6 FLOPs per parameter per token (forward 2, backward 4).
    mfu = lambda tps: 6 * n_params * tps / (peak[dtype] * 1e9)  # noqa: E731
    write_result("learner", {
        "sft_tok_per_s": sft["tok_per_s"], "dpo_tok_per_s": dpo["tok_per_s"],
        "dpo_per_step_ref_tok_per_s": dpo_ref["tok_per_s"],
        "ratio_cached_vs_per_step_ref": dpo["tok_per_s"] / dpo_ref["tok_per_s"],
        "matmul_gflops": peak, "mfu": mfu(sft["tok_per_s"]), "mfu_dpo": mfu(dpo["tok_per_s"]),
        "dtype": dtype, "params": n_params,
        "settings": {"steps": args.steps, "micro_batch": args.micro_batch, "seq_tokens": args.seq * 2,
                     "zero_stage": 2, "model": "SmolLM2-135M-Instruct (embedded)"},
        "sft": sft, "dpo": dpo, "dpo_per_step_ref": dpo_ref, "machine": machine(),
    })


if __name__ == "__main__":
    main()
