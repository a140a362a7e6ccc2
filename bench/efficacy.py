"""Efficacy over seeds: the demo config run once per seed, each stage's accuracy as mean and spread.

One run's gain can be noise (single runs of the same config gave DPO gains from +8.5 to
+25 points). Each seed is a full pipeline run in its own run directory (rerunning the
command resumes unfinished seeds); the held-out problems are the same for every seed, only
sampling and training randomness (run.seed) change. Opt-in, not CI: about 35 minutes a
seed on a 2-core CPU. Writes bench/results/efficacy.json.

    ./dev bench efficacy [--seeds 0 1 2] [--config configs/cpu-demo.yaml] [--runs runs/efficacy] [key=value ...]
    ./dev bench efficacy --seeds 1 2 --reuse 0=docs/results/cpu-demo.json   # a published run as seed 0

--reuse takes a finished run's summary instead of running that seed again (three demos are
about two hours here). It is accepted only when that run used the same config file, unchanged
since the run's commit, with no overrides but its run directory, and no overrides are given now.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import ROOT, write_result


def aggregate(summaries: dict[int, dict]) -> dict:
    """Per stage: accuracy per seed, mean and sample standard deviation; the same for paired differences."""
    from core.stats import mean_and_sd

    seeds = sorted(summaries)
    stages = [s for s in ("base", "rft", "dpo") if all(s in (summaries[k].get("accuracy") or {}) for k in seeds)]
    out: dict = {"seeds": seeds, "stages": {}, "paired": {}}
    for s in stages:
        accs = [summaries[k]["accuracy"][s] for k in seeds]
        mean, sd = mean_and_sd(accs)
        out["stages"][s] = {"accuracy_mean": mean, "accuracy_sd": sd, "accuracy_per_seed": accs,
                            "truncated_per_seed": [(summaries[k].get("truncated") or {}).get(s) for k in seeds]}
    pairs = set.intersection(*(set(summaries[k].get("paired") or {}) for k in seeds)) if seeds else set()
    for p in sorted(pairs):
        diffs = [summaries[k]["paired"][p]["diff"] for k in seeds]
        mean, sd = mean_and_sd(diffs)
        out["paired"][p] = {"diff_mean": mean, "diff_sd": sd, "diff_per_seed": diffs,
                            "ci95_per_seed": [summaries[k]["paired"][p]["ci95"] for k in seeds]}
    out["minutes_per_seed"] = [summaries[k].get("minutes") for k in seeds]
    for k in ("critic_balanced_accuracy", "flawed_work_detection"):  # the critic's probe, per seed
        out[f"{k}_per_seed"] = [summaries[s].get(k) for s in seeds]
    return out


def finished(run_dir: Path, settings: list[str], config: str) -> dict | None:
    """A seed's summary when its run finished with exactly these settings (its config hash)."""
    from core.config import load_config
    from pipelines.results import config_sha256

    path = run_dir / "summary.json"
    if not path.exists():
        return None
    s = json.loads(path.read_text())
    return s if s.get("config_sha256") == config_sha256(load_config(ROOT / config, settings).model_dump()) else None


def run_seed(seed: int, config: str, runs: Path, overrides: list[str]) -> dict:
    run_dir = runs / f"seed-{seed}"
    settings = [f"run.seed={seed}", f"run.run_dir={run_dir}", *overrides]
    done = finished(run_dir, settings, config)
    if done is not None:
        print(f"[efficacy] seed {seed}: finished earlier with these settings ({run_dir})", file=sys.stderr)
        return done
    cmd = [sys.executable, "-m", "pipelines.self_critique", "--config", config, *settings]
    print("[efficacy] " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads((run_dir / "summary.json").read_text())


def config_changed(commit: str, config: str, root: Path = ROOT) -> str | None:
    """Why `config` in the working tree is not the file that `commit` ran, or None."""
    if subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root, capture_output=True).returncode:
        return f"its commit {commit} is not in this repository"
    if subprocess.run(["git", "diff", "--quiet", commit, "--", config], cwd=root).returncode:
        return f"{config} changed since its commit {commit}"
    return None


def reusable(path: Path, seed: int, config: str, overrides: list[str], root: Path = ROOT) -> dict:
    """A finished run's summary as one seed, after checking it ran this config at this seed."""
    s = json.loads(path.read_text())
    why = []
    if overrides:
        why.append(f"overrides {overrides} would apply to the new seeds only")
    if s.get("config") != config:
        why.append(f"it ran config {s.get('config')!r}, not {config!r}")
    ran = [a for a in str(s.get("command", "")).split() if "=" in a and not a.startswith("-")]
    extra = [a for a in ran if not a.startswith(("run.run_dir=", "run.seed="))]
    if extra:
        why.append(f"it ran with overrides {extra}")
    changed = config_changed(str(s.get("commit")), config, root)
    if changed:
        why.append(changed)
    elif s.get("config") == config:
        from core.config import load_config

        ran_seed = next((int(a.split("=", 1)[1]) for a in ran if a.startswith("run.seed=")),
                        load_config(root / config, []).run.seed)
        if ran_seed != seed:
            why.append(f"it ran seed {ran_seed}, not {seed}")
    if why:
        raise SystemExit(f"--reuse {seed}={path}: " + "; ".join(why))
    return {**s, "reused_from": str(path)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--config", default="configs/cpu-demo.yaml")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "efficacy")
    ap.add_argument("--reuse", action="append", default=[], metavar="SEED=SUMMARY_JSON",
                    help="a finished run's summary.json (or its published copy) as that seed")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides applied to every seed")
    args = ap.parse_args()
    reused = {int(k): Path(v) for k, v in (r.split("=", 1) for r in args.reuse)}
    seeds = sorted(set(args.seeds) | set(reused))
    if len(seeds) < 3:
        ap.error("at least 3 seeds: a spread from fewer says little")
    summaries = {s: reusable(reused[s], s, args.config, args.overrides) if s in reused
                 else run_seed(s, args.config, args.runs, args.overrides) for s in seeds}
    first = summaries[seeds[0]]
    write_result("efficacy", {**aggregate(summaries), "config": args.config, "overrides": args.overrides,
                              "n_eval": first.get("n_eval"), "machine": first.get("machine"),
                              "machine_per_seed": [summaries[s].get("machine") for s in seeds],
                              "commits": sorted({str(s.get("commit")) for s in summaries.values()}),
                              "commit_per_seed": [summaries[s].get("commit") for s in seeds],
                              "reused": {str(s): summaries[s]["reused_from"] for s in seeds if s in reused},
                              "config_sha256_per_seed": [summaries[s].get("config_sha256") for s in seeds]})


if __name__ == "__main__":
    main()
