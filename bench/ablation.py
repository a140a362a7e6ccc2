"""The paper's ablation: the same config and seed, RFT and DPO data selected three ways.

  rule            the answer check alone (rule-reward rejection sampling + DPO)
  model           the trained critic alone
  model_rule_cap  the default: the critic's score, which a wrong final answer may only lower

The critic is trained once (in the first policy's run) and reused by the others, so the
three runs differ only in who selects the data. Each run's eval answers the same held-out
problems; the paired differences between policies (DPO models) come with bootstrap 95%
intervals. Opt-in, not CI: about three demo runs' time less two critic stages.
Writes bench/results/ablation.json.

    ./dev bench ablation [--config configs/cpu-demo.yaml] [--runs runs/ablation] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import ROOT, write_result

POLICIES = ("model_rule_cap", "rule", "model")


def seed_manifest(run_dir: Path, critic_entry: dict) -> None:
    """Start a run directory whose critic stage is the first run's (same checkpoint, metrics)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    m = run_dir / "manifest.json"
    manifest = json.loads(m.read_text()) if m.exists() else {"stages": {}}
    manifest["stages"].setdefault("critic", critic_entry)
    m.write_text(json.dumps(manifest, indent=2))


def run_policy(policy: str, config: str, runs: Path, overrides: list[str], critic_entry: dict | None) -> Path:
    run_dir = runs / policy
    if critic_entry is not None:
        seed_manifest(run_dir, critic_entry)
    cmd = [sys.executable, "-m", "pipelines.self_critique", "--config", config, f"critic.policy={policy}",
           "critic.on_gate_fail=stop", f"run.run_dir={run_dir}", *overrides]
    print("[ablation] " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return run_dir


def dpo_correct(run_dir: Path) -> dict[str, bool]:
    from core.stats import eval_outcomes
    from pipelines.stages import read_lineage

    return eval_outcomes(read_lineage(run_dir / "eval" / "dpo" / "lineage.jsonl"))["correct"]


def compare(run_dirs: dict[str, Path]) -> dict:
    """Accuracy per policy and per stage, and every policy pair's paired DPO difference."""
    from core.stats import paired_difference

    summaries = {p: json.loads((d / "summary.json").read_text()) for p, d in run_dirs.items()}
    correct = {p: dpo_correct(d) for p, d in run_dirs.items()}
    out = {"policies": {p: {"accuracy": s["accuracy"], "selection_grader": s.get("selection_grader"),
                            "rft_kept": (s.get("rft") or {}).get("kept"), "dpo_pairs": (s.get("dpo") or {}).get("pairs")}
                        for p, s in summaries.items()}, "paired_dpo": {}}
    names = list(run_dirs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ids = sorted(correct[a].keys() & correct[b].keys())
            out["paired_dpo"][f"{a}_vs_{b}"] = paired_difference([correct[b][k] for k in ids],
                                                                 [correct[a][k] for k in ids])
    first = next(iter(summaries.values()))
    out.update(machine=first.get("machine"), commit=first.get("commit"), config_sha256=first.get("config_sha256"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/cpu-demo.yaml")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablation")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides applied to every run")
    args = ap.parse_args()
    run_dirs, critic_entry = {}, None
    for policy in POLICIES:
        run_dirs[policy] = run_policy(policy, args.config, args.runs, args.overrides, critic_entry)
        critic_entry = critic_entry or json.loads((run_dirs[policy] / "manifest.json").read_text())["stages"]["critic"]
    write_result("ablation", {"config": args.config, "overrides": args.overrides, **compare(run_dirs)})


if __name__ == "__main__":
    main()
