"""How long the base model's greedy answers are: the eval token budget that cuts few of them off.

Greedy decoding is deterministic, so one run with a large budget (--cap) gives every smaller
budget's outcome: a response is cut off at budget B when its full length is over B. Responses
still running at the cap are split into loops (the same piece repeated: no budget finishes
them) and the rest. Prints JSON and writes bench/results/eval_budget.json.

    ./dev bench eval_budget [--problems 64] [--cap 448] [--config configs/cpu-demo.yaml]
"""

from __future__ import annotations

import argparse

from common import ROOT, write_result

BUDGETS = (96, 160, 224, 256, 288, 320, 352, 384, 416, 448, 512)


def cut_off_share(lengths: list[int], capped: list[bool], budget: int, skip: list[bool] | None = None) -> float:
    """Share of responses a budget would cut off (longer than it, or cut off even at the cap),
    counting none that `skip` marks (loops) as cut off."""
    skip = skip or [False] * len(lengths)
    return sum((n > budget or c) and not s for n, c, s in zip(lengths, capped, skip)) / max(len(lengths), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--cap", type=int, default=448, help="largest budget tried (loops run to it)")
    ap.add_argument("--config", default=str(ROOT / "configs" / "cpu-demo.yaml"))
    args = ap.parse_args()

    from actors.engine import Engine, SamplingSpec
    from core.answers import looping
    from core.config import load_config
    from core.data import load_problems
    from core.hardware import machine_info
    from core.models import resolve_model
    from core.prompts import solver_messages

    cfg = load_config(args.config)
    problems = load_problems(cfg.data.test, cfg.data.on_bad_row)[0][: args.problems]
    s = cfg.resources.samplers
    eng = Engine(resolve_model(cfg.model.name), dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len,
                 kv_cache_gib=s.kv_cache_gib, cpu_threads_bind=s.cpu_threads_bind, max_num_seqs=s.max_num_seqs)
    cap = min(args.cap, cfg.model.max_model_len)
    outs = eng.generate([solver_messages(p, cfg.model.system_prompt) for p in problems],
                        SamplingSpec(max_new_tokens=cap))
    eng.shutdown()
    lengths = [len(o[0].token_ids) for o in outs]
    capped = [o[0].finish_reason == "length" for o in outs]
    loops = [c and looping(o[0].text) for o, c in zip(outs, capped)]
    budgets = [b for b in BUDGETS if b <= cap]
    write_result("eval_budget", {
        "problems": len(problems), "config": str(args.config), "test_data": cfg.data.test.model_dump(),
        "model": cfg.model.name, "cap": cap,
        "lengths_sorted": sorted(lengths), "cut_off_at_cap": sum(capped), "looping_at_cap": sum(loops),
        "cut_off_share": {str(b): cut_off_share(lengths, capped, b) for b in budgets},
        "cut_off_share_not_looping": {str(b): cut_off_share(lengths, capped, b, loops) for b in budgets},
        "tails_cut_off_at_cap": [o[0].text[-160:] for o, c in zip(outs, capped) if c],
        "eval_max_new_tokens": cfg.eval.max_new_tokens,
        "machine": machine_info(),
    })


if __name__ == "__main__":
    main()
