"""Learner throughput against TRL, side by side, in one run; old vs new log-prob code; a per-step profile.

Same data, batch, dtype (fp32 unless the CPU has native bf16) and learning rate for both:
- ours: the learner's own step (learners.trainer.LearnerWorker.step, one DeepSpeed engine in
  this process), DPO with reference log-probs from learners.ref_scorer.ReferenceScorer;
- TRL (the `bench` extra): DPOTrainer with precompute_ref_log_probs=True and SFTTrainer,
  gradient checkpointing off like ours, no bf16 where the CPU lacks it.
Throughput = prompt+response tokens of every trained sequence / wall seconds, where the
seconds include computing the reference log-probs (DPO) and the first step, for both.
`layouts` times both batch layouts (one row per sequence; shared prefix and prompts) on every
shape. Two data shapes, from the project's generated problems: "short" (solver prompt, a worked
answer: RFT/DPO-like) and "critic" (the judge prompt with a response in it, a one-line
critique: long prompt, short target).

    ./dev bench learner [--items 16] [--micro-batch 8] [--max-len 256] [--profile-steps 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time

from common import ROOT, gemm_peak_gflops, write_result

MODEL = "embedded:smollm2-135m-instruct"


# ------------------------------------------------------------------------------ data


def build_data(n: int, shape: str) -> list[dict]:
    """{messages, chosen, rejected} rows; SFT trains on (messages, chosen)."""
    from core.config import ModelConfig
    from core.problem_gen import generate_problems
    from core.prompts import judge_messages, solver_messages, wrong_final_answer

    rows = []
    for i, p in enumerate(generate_problems(n, "train", (1, 2), 0)):
        wrong = wrong_final_answer(p.reference, p.answer, str(i)) or p.reference + " Maybe not."
        # a worked answer about as long as the demo's sampled ones (up to 96 new tokens)
        work = f"Let's solve it step by step. We read the question: {p.question} {p.reference}"
        bad = f"Let's solve it step by step. We read the question: {p.question} {wrong}"
        if shape == "short":
            rows.append({"messages": solver_messages(p, ModelConfig().system_prompt), "chosen": work,
                         "rejected": bad})
        else:
            both = f"The response's final answer is {p.answer}. The reference answer is {p.answer}."
            right, off = f"{both} They match.\nScore: 9", f"{both} They differ.\nScore: 2"
            rows.append({"messages": judge_messages(p, work), "chosen": right, "rejected": off})
    return rows


def count_tokens(tok, rows: list[dict], max_len: int, kind: str) -> int:
    """Prompt+response tokens of every trained sequence; none may be cut (the two tools cut differently)."""
    from learners.batching import encode

    resp = ["chosen"] if kind == "sft" else ["chosen", "rejected"]
    lengths = [len(encode(tok, r["messages"], r[k], 10**6)[0]) + 1 for r in rows for k in resp]
    if max(lengths) > max_len:
        raise ValueError(f"a sequence has {max(lengths)} tokens, over --max-len {max_len}: raise it")
    return sum(lengths)


# ------------------------------------------------------------------------------ our learner


def _job(kind: str, model_path: str, args, lr: float, zero_stage: int | None = None):
    """The demo's learner settings; zero_stage forces a ZeRO stage (else the learner picks)."""
    from learners.trainer import LearnJob

    return LearnJob(name="bench", kind=kind, model_path=model_path, out_dir="", storage_dir="", buffer=None, lr=lr,
                    micro_batch_size=args.micro_batch, max_len=args.max_len, bf16=True,
                    zero_stage=2 if zero_stage is None else zero_stage, plain_when_single=zero_stage is None,
                    warmup_steps=0, beta=0.5, nll_coef=1.0)


def _records(kind: str, rows: list[dict]):
    from core.records import Pair, Problem, SFTExample

    if kind == "sft":
        return [SFTExample(f"k{i}", r["messages"], r["chosen"]) for i, r in enumerate(rows)]
    return [Pair(Problem(f"p{i}", "q"), r["messages"], r["chosen"], r["rejected"], 9, 2, "a", "b")
            for i, r in enumerate(rows)]


def run_ours(kind: str, rows: list[dict], model_path: str, args, zero_stage: int | None = None,
             around_train=None) -> dict:
    """Reference log-probs (DPO), then every micro-batch through LearnerWorker.step."""
    import contextlib

    from learners.ref_scorer import ReferenceScorer
    from learners.trainer import LearnerWorker, loss_units

    items = _records(kind, rows)
    ref_s = score_s = 0.0
    if kind == "dpo":  # timed with loading its model, as TRL's reference model loads in its timed __init__
        t0 = time.perf_counter()
        scorer = ReferenceScorer(model_path, max_len=args.max_len, dtype="auto", batch_size=args.micro_batch)
        t_loaded = time.perf_counter()
        items = scorer.enrich(items)
        ref_s, score_s = time.perf_counter() - t0, time.perf_counter() - t_loaded
        del scorer
    w = LearnerWorker(_job(kind, model_path, args, args.lr, zero_stage), 0, 1)
    t0 = time.perf_counter()
    with around_train or contextlib.nullcontext():
        for i in range(0, len(items), args.micro_batch):
            batch = w.batch(items[i:i + args.micro_batch])
            w.step(batch, loss_units(batch, w.job))
    train_s = time.perf_counter() - t0
    del w
    return {"ref_seconds": ref_s, "ref_scoring_seconds": score_s, "train_seconds": train_s,
            "seconds": ref_s + train_s}


# ------------------------------------------------------------------------------ TRL


def run_trl(kind: str, rows: list[dict], model_path: str, args, bf16: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    common = dict(output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=args.micro_batch,
                  num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
                  bf16=bf16, gradient_checkpointing=False, max_length=args.max_len, logging_steps=10**6,
                  save_strategy="no", report_to="none", disable_tqdm=True, seed=0, dataloader_num_workers=0)
    assistant = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    t0 = time.perf_counter()  # __init__ tokenizes and (DPO) computes the reference log-probs
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        data = Dataset.from_list([{"prompt": r["messages"], "chosen": assistant(r["chosen"]),
                                   "rejected": assistant(r["rejected"])} for r in rows])
        cfg = DPOConfig(**common, beta=0.5, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0],
                        precompute_ref_log_probs=True, precompute_ref_batch_size=args.micro_batch)
        trainer = DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok)
    else:
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_list([{"prompt": r["messages"], "completion": assistant(r["chosen"])} for r in rows])
        trainer = SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=data, processing_class=tok)
    trainer.train()
    secs = time.perf_counter() - t0
    del trainer, model
    return {"seconds": secs}


# ------------------------------------------------------------------------------ old vs new log-probs


def old_response_logps(model, batch):
    """The code before: logits at every position, then a full-vocabulary fp32 log_softmax."""
    import torch

    from learners.losses import IGNORE

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"], use_cache=False).logits
    labels = batch["labels"]
    mask = labels != IGNORE
    lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(-1), mask.sum(-1)


class PeakMemory:
    """Peak memory above the starting level while the block runs: CUDA allocator stats on a
    GPU, else the process's resident set sampled every 2 ms."""

    def __enter__(self):
        import psutil
        import torch

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.proc, self.base, self.peak, self.stop = psutil.Process(), psutil.Process().memory_info().rss, 0, False
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            self.mib = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.stop = True
            self.thread.join()
            self.mib = (self.peak - self.base) / 2**20


def logprob_old_vs_new(rows: list[dict], model_path: str, args) -> dict:
    """The DPO run (critic shape) with the log-prob code before and after, same engine settings.

    old: one row per sequence, logits at every position, a full-vocabulary fp32 log_softmax;
    chunked: the LM head only on the response columns, target logit minus a chunked logsumexp;
    new (the learner now): chunked, and each pair's prompt run once (shared prompt).
    """
    import learners.batching as B
    import learners.losses as L
    import learners.ref_scorer as R

    out = {}
    logps, best = L.response_logps, B.collate_best
    tokens = count_tokens(_tok(model_path), rows, args.max_len, "dpo")
    variants = {"new": (logps, best), "chunked": (logps, B.collate), "old": (old_response_logps, B.collate)}
    for name, (fn, coll) in variants.items():  # new first: it cannot reuse memory the old code freed
        L.response_logps = R.response_logps = fn
        B.collate_best = R.collate_best = coll
        try:
            mem = PeakMemory()
            r = run_ours("dpo", rows, model_path, args, around_train=mem)
            out[name] = {"train_tok_per_s": tokens / r["train_seconds"],
                         "ref_tok_per_s": tokens / r["ref_scoring_seconds"],
                         "train_peak_mib_above_start": mem.mib}
        finally:
            L.response_logps = R.response_logps = logps
            B.collate_best = R.collate_best = best
    return out


# ------------------------------------------------------------------------------ layouts


def batch_cells(batch: dict) -> int:
    """Token positions the model computes for a collated batch (padding included)."""
    cells = batch["input_ids"].numel()
    if "prompt_ids" in batch:
        cells += batch["prompt_ids"].numel() + (batch["prefix_ids"].numel() if "prefix_ids" in batch else 0)
    return cells


def layout_costs(model_path: str, args) -> dict:
    """Per shape and kind, train seconds per token cell with every batch in the one-pass layout and
    in the shared one (common prefix, then each prompt once): the source of
    learners.batching.SHARED_CELL_COST, which collate_best weighs the two layouts' cells by."""
    import learners.batching as B
    import learners.ref_scorer as R
    from learners.trainer import prepare_batch

    best, out = B.collate_best, {}
    for shape in args.shapes.split(","):
        rows = build_data(args.items, shape)
        for kind in ("sft", "dpo"):
            res = {}
            for name, coll in (("one_pass", B.collate), ("shared", B.collate_shared)):
                B.collate_best = R.collate_best = coll
                try:
                    items, job = _records(kind, rows), _job(kind, model_path, args, args.lr)
                    cells = sum(batch_cells(prepare_batch(_tok(model_path), items[i:i + args.micro_batch], job))
                                for i in range(0, len(items), args.micro_batch))
                    secs = run_ours(kind, rows, model_path, args)["train_seconds"]
                finally:
                    B.collate_best = R.collate_best = best
                res[name] = {"cells": cells, "train_seconds": secs, "ms_per_cell": 1000 * secs / cells}
            res["shared_cost_per_cell"] = res["shared"]["ms_per_cell"] / res["one_pass"]["ms_per_cell"]
            res["shared_speedup"] = res["one_pass"]["train_seconds"] / res["shared"]["train_seconds"]
            out[f"{shape}_{kind}"] = res
            print("layouts", shape, kind, {k: round(v, 3) for k, v in res.items() if isinstance(v, float)}, flush=True)
    return out


# ------------------------------------------------------------------------------ profile


def _now() -> float:
    return time.perf_counter()


def profile_plain(model, opt, batch, path: str) -> dict:
    """Seconds per phase of one SFT step in plain torch (no DeepSpeed)."""
    import torch

    from learners.losses import token_logps

    t = {}
    t0 = _now()
    h = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"], use_cache=False).last_hidden_state
    t["forward_body"] = _now() - t0
    labels = batch["labels"]
    if path == "new":
        keep = batch["logits_to_keep"]
        h, labels = h[:, -keep:], labels[:, -keep:]
    t0 = _now()
    logits = model.lm_head(h)
    if path == "new":
        lp, mask = token_logps(logits, labels)
    else:
        mask = labels != -100
        lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.masked_fill(~mask, 0)[..., None])[..., 0] * mask
    loss = -lp.sum() / mask.sum()
    t["lm_head_and_log_softmax"] = _now() - t0
    t0 = _now()
    loss.backward()
    t["backward"] = _now() - t0
    t0 = _now()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t["optimizer"] = _now() - t0
    return t


def one_pass_batch(items: list, model_path: str, args) -> dict:
    """SFT items as one row per sequence: the layout the plain-torch phases below take apart."""
    from learners.batching import collate, encode, pad_id

    tok = _tok(model_path)
    return collate([encode(tok, it.messages, it.response, args.max_len) for it in items], pad_id(tok))


def warm_up(model_path: str, args) -> float:
    """Two untimed plain-torch SFT steps on each shape, before anything is timed. A process's
    first steps also pay for thread-pool start, BLAS kernel selection and allocator growth; the
    first trainer timed (ours, on the short shape) paid them alone: its reference scoring ran at
    271 tokens/s there against 744 on the critic shape in the same run (the file as committed in
    this change's parent)."""
    import torch
    from transformers import AutoModelForCausalLM

    t0 = _now()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    for shape in args.shapes.split(","):
        batch = one_pass_batch(_records("sft", build_data(args.micro_batch, shape)), model_path, args)
        for _ in range(2):
            profile_plain(model, opt, batch, "new")
    return _now() - t0


def profile(rows: list[dict], model_path: str, args) -> dict:
    """Demo critic shape, one row per sequence: per-phase seconds (plain torch, old and new log-prob
    code), and the whole step under DeepSpeed ZeRO-2 and ZeRO-0; overhead = DeepSpeed step - plain step."""
    import torch
    from transformers import AutoModelForCausalLM

    from learners.trainer import LearnerWorker, loss_units

    items = _records("sft", rows[:args.micro_batch])
    out = {}
    for path in ("old", "new"):
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
        batch = one_pass_batch(items, model_path, args)
        runs = [profile_plain(model, opt, batch, path) for _ in range(args.profile_steps + 1)][1:]
        out[f"plain_{path}"] = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
        out[f"plain_{path}"]["step"] = sum(out[f"plain_{path}"].values())
        del model, opt
    # ZeRO-0 with one rank skips DeepSpeed's identity all-reduce (ds_engine.skip_lone_allreduce);
    # "zero0_allreduce" puts it back, as the baseline of that change in the same run.
    for name, stage, allreduce in (("zero2", 2, None), ("zero0", 0, None), ("zero0_allreduce", 0, True)):
        w = LearnerWorker(_job("sft", model_path, args, args.lr, stage), 0, 1)
        if allreduce is not None:
            w.engine.enable_backward_allreduce = allreduce
        batch = one_pass_batch(items, model_path, args)
        times = []
        for _ in range(args.profile_steps + 1):
            t0 = _now()
            w.step(batch, loss_units(batch, w.job))
            times.append(_now() - t0)
        out[f"deepspeed_{name}_step"] = sum(times[1:]) / args.profile_steps
        out[f"deepspeed_{name}_overhead"] = out[f"deepspeed_{name}_step"] - out["plain_new"]["step"]
        del w
    out["tokens_per_step"] = count_tokens(_tok(model_path), rows[:args.micro_batch], args.max_len, "sft")
    return out


# ------------------------------------------------------------------------------ matrix products


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def matmul_bound(model_path: str, args) -> dict:
    """Per shape, one plain-torch SFT step (the learner's log-prob code) under the profiler: the
    share of the step in matrix products and their rate against the CPU's GEMM peak. Near the
    peak, a faster step needs fewer products, not faster ones."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile
    from transformers import AutoModelForCausalLM


    out = {"gemm_peak_gflops": gemm_peak_gflops()}
    for shape in args.shapes.split(","):
        items = _records("sft", build_data(args.items, shape)[:args.micro_batch])
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
        batch = one_pass_batch(items, model_path, args)
        profile_plain(model, opt, batch, "new")  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            t0 = _now()
            profile_plain(model, opt, batch, "new")
            step = _now() - t0
        mm = [e for e in prof.key_averages() if e.key in MATMUL_OPS]
        secs, flops = sum(e.self_cpu_time_total for e in mm) / 1e6, sum(e.flops for e in mm)
        out[shape] = {"step_seconds": step, "matmul_seconds": secs, "matmul_share": secs / step,
                      "matmul_gflops": flops / secs / 1e9, "matmul_vs_peak": flops / secs / 1e9 / out["gemm_peak_gflops"]}
        del model, opt
    return out


# ------------------------------------------------------------------------------ work done


def counted_flops(train) -> float:
    """Matrix-product FLOPs (forward and backward) of one whole `train()` call, as torch's
    FlopCounterMode counts them at dispatch: what each trainer asks the CPU to multiply."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train()
    return float(counter.get_total_flops())


def work_ratios(model_path: str, args, bf16: bool) -> dict:
    """Per shape and trainer, TRL's FLOPs over ours on the same rows (reference log-probs
    included). At equal matrix-product speed this is the most the time ratio can be: a ratio
    of 2 needs TRL to do twice our products."""
    out = {}
    for shape in args.shapes.split(","):
        rows = build_data(args.items, shape)
        for kind in ("dpo", "sft"):
            ours = counted_flops(lambda: run_ours(kind, rows, model_path, args))
            trl = counted_flops(lambda: run_trl(kind, rows, model_path, args, bf16))
            out[f"{shape}_{kind}"] = {"ours_gflop": ours / 1e9, "trl_gflop": trl / 1e9, "trl_over_ours": trl / ours}
    return out


# ------------------------------------------------------------------------------ main


_TOKENIZERS: dict = {}


def _tok(model_path: str):
    from transformers import AutoTokenizer

    return _TOKENIZERS.setdefault(model_path, AutoTokenizer.from_pretrained(model_path))


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "learners", "bench/learner.py"], cwd=ROOT)
    return out.stdout.strip() + ("+dirty" if dirty.returncode else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=16, help="pairs (DPO) or examples (SFT) per run")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--profile-steps", type=int, default=2)
    ap.add_argument("--shapes", default="short,critic")
    ap.add_argument("--model", default=MODEL, help="a checkpoint to try the script on; results name the default")
    ap.add_argument("--out", default="learner", help="results file name under bench/results")
    ap.add_argument("--repeats", type=int, default=1, help="runs of ours and of TRL per shape and trainer (medians)")
    ap.add_argument("--ratios-only", action="store_true",
                    help="only ours against TRL per shape (skips the log-prob, profile, layout and matmul sections)")
    ap.add_argument("--with-flops", action="store_true",
                    help="also count each trainer's matrix-product FLOPs on the same rows (work_ratios)")
    ap.add_argument("--flops-only", action="store_true", help="only the FLOP counts (no timing); with --out")
    args = ap.parse_args()
    try:
        import trl  # noqa: F401
    except ImportError:
        raise SystemExit("bench/learner.py compares against TRL: pip install -e '.[bench]' into the venv first")
    for k, v in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533").items():
        os.environ.setdefault(k, v)
    import torch.distributed as dist

    from core.hardware import bf16_supported, machine_info
    from core.models import resolve_model

    dist.init_process_group("gloo", rank=0, world_size=1)
    model_path = resolve_model(args.model)
    bf16 = bf16_supported()
    warm = 0.0 if args.flops_only else warm_up(model_path, args)  # counting FLOPs needs no warm machine
    result: dict = {"dtype": "bf16" if bf16 else "fp32", "shapes": {}, "warm_up_seconds": warm}
    for shape in [] if args.flops_only else args.shapes.split(","):
        rows = build_data(args.items, shape)
        res = {}
        for kind in ("dpo", "sft"):
            res |= compare(kind, rows, model_path, args, bf16)
        result["shapes"][shape] = res
        print(shape, {k: round(v, 2) for k, v in res.items() if isinstance(v, float)}, flush=True)
    if args.with_flops or args.flops_only:
        result["work_ratios"] = work_ratios(model_path, args, bf16)
        print("work", {k: round(v["trl_over_ours"], 2) for k, v in result["work_ratios"].items()}, flush=True)
    if not (args.ratios_only or args.flops_only):
        extra_sections(result, model_path, args)
    result["settings"] = {"items": args.items, "micro_batch": args.micro_batch, "max_len": args.max_len,
                          "lr": args.lr, "model": args.model, "trl": _version("trl"), "ratios_only": args.ratios_only,
                          "repeats": args.repeats, "with_flops": args.with_flops,
                          "flops_only": args.flops_only,
                          "trl_settings": "precompute_ref_log_probs=True, gradient_checkpointing=False, "
                                          "bf16 only if native, loss sigmoid+sft (DPO+NLL), beta 0.5"}
    result["machine"] = machine_info() | {"commit": _commit()}
    result["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write_result(args.out, result)


def compare(kind: str, rows: list[dict], model_path: str, args, bf16: bool) -> dict:
    """Ours and TRL `--repeats` times each, alternating which goes first, so a machine whose speed
    wanders mid-run is seen by both; tokens/s and the ratio are medians over the repeats."""
    import statistics

    tokens = count_tokens(_tok(model_path), rows, args.max_len, kind)
    trainers = {"ours": lambda: run_ours(kind, rows, model_path, args),
                "trl": lambda: run_trl(kind, rows, model_path, args, bf16)}
    runs = []
    for r in range(args.repeats):
        order = ("ours", "trl") if r % 2 == 0 else ("trl", "ours")
        got = {who: trainers[who]() for who in order}
        runs.append({"ours": got["ours"], "trl": got["trl"], "ratio": got["trl"]["seconds"] / got["ours"]["seconds"]})
    median = statistics.median
    out = {f"{kind}_tok_per_s": median(tokens / x["ours"]["seconds"] for x in runs),
           f"trl_{kind}_tok_per_s": median(tokens / x["trl"]["seconds"] for x in runs),
           f"ratio_{kind}_vs_trl": median(x["ratio"] for x in runs),
           f"{kind}_detail": {"tokens": tokens, "ours": runs[0]["ours"], "trl": runs[0]["trl"], "repeats": runs}}
    if kind == "dpo":  # the reference scorer alone (model loaded): forward passes over chosen and rejected
        out["ref_scorer_tok_per_s"] = median(tokens / x["ours"]["ref_scoring_seconds"] for x in runs)
    return out


def extra_sections(result: dict, model_path: str, args) -> None:
    critic = build_data(args.items, "critic")
    result["logprobs_old_vs_new"] = logprob_old_vs_new(critic[:2 * args.micro_batch], model_path, args)
    result["profile_critic_sft"] = profile(critic, model_path, args)
    result["layouts"] = layout_costs(model_path, args)
    result["matmul_bound"] = matmul_bound(model_path, args)


def _version(dist_name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
