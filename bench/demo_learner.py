"""The demo's training stages before and after the learner work, from two finished run directories.

    ./dev bench demo_learner BEFORE_RUN AFTER_RUN [--before-commit SHA] [--after-commit SHA]
        # writes bench/results/demo_learner.json

Both runs' figures are computed here the same way, whatever each run's own code recorded:
- stage minutes: each stage's start to finish in the run's manifest (sampling, judging, training);
- learner seconds: the learner's logged step windows after its first (rank 0's metrics rows:
  tokens over tokens/s), i.e. each step with its buffer take. The first window is left out: it
  holds the learner's wait for the rollout in one version and not in the other;
- sequence tokens of those steps: every consumed buffer item encoded again with this commit's
  `encode` at the run's `train.max_len` (prompt and response positions; a DPO pair counts both
  sequences), times the stage's epochs, less the items the first step took (`acks.jsonl`).

Runs made at a commit that predates recorded provenance need their commit on the command line.
The two runs' configs may differ (the demo's config changed with the learner): per-token rates
compare, stage minutes only as far as the configs do, and the JSON holds both configs' stage keys.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import machine, write_result

STAGES = ("critic", "rft", "dpo")


def read_jsonl(path: Path) -> list[dict]:
    """A run directory's log, read as the buffer and learner read it; a missing one is an error here."""
    from actors.journal import Journal

    if not path.exists():
        raise SystemExit(f"{path}: missing (is this a finished run directory?)")
    return Journal.read(path)


def step_windows(metrics: Path) -> list[float]:
    """Seconds of each logged step's window; one attempt only, since a resumed learner's windows
    would count its replayed steps twice."""
    rows = read_jsonl(metrics)
    if not rows:
        raise SystemExit(f"{metrics}: no step logged")
    steps = [r["step"] for r in rows]
    if steps != sorted(set(steps)):
        raise SystemExit(f"{metrics}: steps repeat or go back (a resumed learner): {steps}")
    last, out = 0, []
    for r in rows:
        if r["tok_per_s"] <= 0:
            raise SystemExit(f"{metrics}: step {r['step']}: tok_per_s {r['tok_per_s']}, expected > 0")
        out.append((r["tokens"] - last) / r["tok_per_s"])
        last = r["tokens"]
    return out


def consumed_items(rollout: Path) -> tuple[dict[str, dict], set[str]]:
    """Buffer items the learner acknowledged (an undone ack takes it back), by key, and the keys
    its first step took."""
    step: dict[str, int] = {}
    for a in read_jsonl(rollout / "acks.jsonl"):
        if a.get("undo"):
            step.pop(a["key"], None)
        else:
            step[a["key"]] = a["step"]
    items = {d["key"]: d["item"] for d in read_jsonl(rollout / "deliverables.jsonl") if d["key"] in step}
    missing = step.keys() - items.keys()
    if missing:
        raise SystemExit(f"{rollout}: {len(missing)} acknowledged keys have no deliverable, e.g. {sorted(missing)[0]}")
    return items, {k for k, s in step.items() if s == 1}


def sequence_tokens(tok, item: dict, max_len: int) -> int:
    from learners.batching import encode

    responses = [item["response"]] if "response" in item else [item["chosen"], item["rejected"]]
    return sum(len(encode(tok, item["messages"], r, max_len)[0]) for r in responses)


def stage_figures(run: Path, stage: str, cfg: dict, minutes: float | None, tok) -> dict:
    items, first = consumed_items(run / stage / "rollout")
    max_len, epochs = cfg["train"]["max_len"], cfg[stage]["epochs"]
    counts = {k: sequence_tokens(tok, it, max_len) for k, it in items.items()}
    tokens = sum(counts.values()) * epochs - sum(counts[k] for k in first)
    windows = step_windows(run / stage / "train" / f"{stage}-learner-metrics.jsonl")
    secs = sum(windows[1:])
    return {"stage_minutes": minutes, "items": len(items), "epochs": epochs,
            "optimizer_steps": len(windows), "first_window_seconds": round(windows[0], 1),
            "learner_seconds": round(secs, 1), "sequence_tokens": tokens,
            "learner_tok_per_s": round(tokens / secs, 1) if secs else None}


def run_figures(run: Path, commit: str | None, tok) -> dict:
    from pipelines.results import stage_minutes

    manifest = json.loads((run / "manifest.json").read_text())
    prov = manifest.get("provenance") or {}
    commit = prov.get("commit") or commit
    if not commit:
        raise SystemExit(f"{run}/manifest.json: no recorded commit; give it with --before-commit/--after-commit")
    cfg = json.loads((run / "config.json").read_text())
    minutes = stage_minutes(manifest["stages"])
    return {"run_dir": str(run), "commit": commit, "commit_from": "manifest" if prov.get("commit") else "command line",
            "machine": prov.get("machine"), "minutes": round(manifest.get("last_run_minutes", 0), 2),
            "config": {s: cfg.get(s) for s in (*STAGES, "train")},
            "stages": {s: stage_figures(run, s, cfg, minutes.get(s), tok) for s in STAGES}}


def ratios(before: dict, after: dict) -> dict:
    out = {}
    for s in STAGES:
        b, a = before["stages"][s], after["stages"][s]
        out[s] = {"learner_tok_per_s": a["learner_tok_per_s"] / b["learner_tok_per_s"],
                  "stage_minutes": b["stage_minutes"] / a["stage_minutes"]}
    return {s: {k: round(v, 2) for k, v in r.items()} for s, r in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--before-commit")
    ap.add_argument("--after-commit")
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from core.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("embedded:smollm2-135m-instruct"))
    before = run_figures(args.before, args.before_commit, tok)
    after = run_figures(args.after, args.after_commit, tok)
    from pipelines.results import git_commit

    write_result("demo_learner", {"machine": machine(), "commit": git_commit(), "before": before, "after": after,
                                  "after_over_before": ratios(before, after)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
