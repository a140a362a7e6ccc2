"""The run's results file: every figure the report, README and docs quote, written by code.

The pipeline writes `<run_dir>/summary.json` with `build`; `./dev report RUN_DIR --publish
docs/results/cpu-demo.json` rebuilds it from the run directory, re-renders the report,
checks the schema and copies the file (and the plots) byte for byte. The machine, the
commit and the config hash are detected when the run starts, not typed.

    python -m pipelines.results runs/cpu-demo [--publish docs/results/cpu-demo.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipelines.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ("rft_vs_base", "dpo_vs_base", "dpo_vs_rft")
MACHINE_KEYS = ("cpu_model", "cores", "bf16_native", "torch", "vllm")
# Every results file has these; anything else the stages report (critic fields, ...) passes through.
REQUIRED = ("accuracy", "n_eval", "truncated", "paired", "by_category", "critic_accuracy", "critic_on_eval",
            "minutes", "stage_minutes", "command", "config", "machine", "commit", "config_sha256",
            "critic", "rft", "dpo", "critic_note")
TRUNCATION_WARN = 0.05  # above this cut-off share a stage's accuracy measures its token budget


class ResultsError(ValueError):
    pass


# ------------------------------------------------------------------ provenance (recorded at run start)


def git_commit(root: Path = ROOT) -> str | None:
    """HEAD, with "-dirty" when tracked files differ from it; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def config_sha256(config: dict) -> str:
    """Hash of the resolved settings; the run directory's own path is not a setting."""
    settings = json.loads(json.dumps(config))
    settings.get("run", {}).pop("run_dir", None)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def provenance(config: dict, command: str, config_path: str) -> dict:
    from core.hardware import machine_info

    return {"command": command, "config": config_path, "machine": machine_info(), "commit": git_commit(),
            "config_sha256": config_sha256(config), "recorded_at": time.time()}


# ------------------------------------------------------------------ building the results from a run directory


def stage_minutes(stages: dict) -> dict:
    """Start of a stage's first attempt to its finish: for a resumed stage this includes the time it lay dead."""
    return {s: round((e["finished"] - e["started"]) / 60, 2) for s, e in stages.items()
            if e.get("status") == "done" and e.get("finished") and e.get("started")}


def eval_figures(run: RunDir, ev: dict, seed: int) -> dict:
    """Cut-off and looping shares and paired differences; recomputed from the eval lineage for runs
    that predate them."""
    if "paired" in ev and "truncated" in ev:
        return {"truncated": ev["truncated"], "looping": ev.get("looping"), "runaway": ev.get("runaway"),
                "paired": ev["paired"]}
    from core.stats import paired_table
    from pipelines.stages import eval_dir_outcomes

    outcomes = {s: eval_dir_outcomes(run.root / "eval" / s) for s in ev.get("accuracy", {})}
    return {"truncated": {s: o["truncated"] for s, o in outcomes.items()},
            "looping": {s: o["looping"] for s, o in outcomes.items()},
            "runaway": {s: o["runaway"] for s, o in outcomes.items()},
            "paired": paired_table({s: o["correct"] for s, o in outcomes.items()}, seed=seed)}


def critic_note(res: dict) -> str:
    """One plain sentence on the critic, from the figures (the report and README quote it)."""
    if res.get("critic_balanced_accuracy") is None:
        return "No trained critic was evaluated in this run."
    parts = [f"Critic balanced accuracy {res['critic_balanced_accuracy']:.3f} on the critic stage's held-out probe "
             f"of {res.get('critic_n')} responses ({res.get('critic_n_pass')} passing, {res.get('critic_n_fail')} not; "
             f"AUC {_f(res.get('critic_auc'))}, flawed-work detection {_f(res.get('flawed_work_detection'))})"]
    oe = res.get("critic_on_eval") or {}
    if oe.get("critic_n"):
        parts.append(f"and {_f(oe.get('critic_balanced_accuracy'))} on {oe['critic_n']} eval responses and their "
                     f"flawed copies ({oe.get('critic_n_pass')} passing; flawed-work detection "
                     f"{_f(oe.get('flawed_work_detection'))})")
    return ", ".join(parts) + "."


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def selection_grader(run: RunDir, metrics: dict, threshold: float) -> dict:
    """Per stage: which grader decided the kept (RFT) or paired (DPO) samples, with counts,
    recomputed from the stage's lineage and decisions logs where they exist."""
    from core.critic_eval import selection_summary
    from pipelines.stages import read_lineage

    out = {}
    for s in ("rft", "dpo"):
        d = run.root / s / "rollout"
        if (d / "decisions.jsonl").exists():
            kept = {json.loads(x)["key"] for x in (d / "decisions.jsonl").read_text().splitlines()
                    if x.strip() and json.loads(x)["kept"]}
            metrics[s]["selection"] = selection_summary(read_lineage(d / "lineage.jsonl"), threshold, kept)
        if metrics[s]:
            out[s] = (metrics[s].get("selection") or {}).get("decided_by_kept")
    return out


def build(run: RunDir, provenance_now: dict | None = None) -> dict:
    """The results dict of a finished (or partly finished) run: what summary.json and the report hold."""
    st = run.manifest["stages"]
    metrics = {s: (st.get(s) or {}).get("metrics") or {} for s in ("critic", "rft", "dpo", "eval")}
    ev, crit = metrics["eval"], metrics["critic"]
    prov = run.manifest.get("provenance") or provenance_now or {}
    cfg = json.loads((run.root / "config.json").read_text()) if (run.root / "config.json").exists() else {}
    res = {"accuracy": ev.get("accuracy"), "n_eval": ev.get("n_eval"),
           **eval_figures(run, ev, cfg.get("run", {}).get("seed", 0)),
           "eval_max_new_tokens": ev.get("max_new_tokens", cfg.get("eval", {}).get("max_new_tokens")),
           "cut_off_unanswered": ev.get("cut_off_unanswered"),
           "by_category": ev.get("by_category"), "critic_accuracy": crit.get("critic_accuracy"),
           "critic_on_eval": ev.get("critic_on_eval"), "minutes": round(run.manifest.get("last_run_minutes", 0), 2),
           "stage_minutes": stage_minutes(st), "stage_attempts": {s: e.get("attempts") for s, e in st.items()},
           **{k: prov.get(k) for k in
                                                  ("command", "config", "machine", "commit", "config_sha256")},
           "critic": crit, "rft": metrics["rft"], "dpo": metrics["dpo"]}
    for source in (crit, ev):  # the critic's and the eval's own fields, whatever they are
        for k, v in source.items():
            res.setdefault(k, v)
    res["selection_grader"] = selection_grader(run, metrics, cfg.get("critic", {}).get("keep_threshold", 7.0))
    if prov.get("detected"):
        res["provenance_detected"] = prov["detected"]
    res["critic_note"] = critic_note(res)
    return res


# ------------------------------------------------------------------ checks and publishing


def check(res: dict) -> list[str]:
    """What is missing or malformed in a results dict; empty when it can be published."""
    errs = [f"missing field {k!r}" for k in REQUIRED if k not in res]
    m = res.get("machine")
    if not isinstance(m, dict) or any(k not in m for k in MACHINE_KEYS):
        errs.append(f"machine: expected an object with {', '.join(MACHINE_KEYS)}, got {m!r}")
    for k in ("commit", "config_sha256"):
        if not isinstance(res.get(k), str) or not res.get(k):
            errs.append(f"{k}: expected a non-empty string, got {res.get(k)!r}")
    acc = res.get("accuracy") or {}
    tr = res.get("truncated") or {}
    if not acc or set(tr) != set(acc) or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in tr.values()):
        errs.append(f"truncated: expected a share in [0, 1] for each stage {sorted(acc)}, got {tr!r}")
    paired = res.get("paired") or {}
    for p in PAIRS:
        if p.split("_vs_")[0] in acc and p.split("_vs_")[1] in acc:
            errs += _check_pair(p, paired.get(p))
    return errs


def _check_pair(name: str, p) -> list[str]:
    if not isinstance(p, dict) or any(k not in p for k in ("diff", "ci95", "up", "down")):
        return [f"paired.{name}: expected an object with diff, ci95, up, down, got {p!r}"]
    ci = p["ci95"]
    if not (isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci)):
        return [f"paired.{name}.ci95: expected a list of two numbers, got {ci!r}"]
    return [] if ci[0] <= p["diff"] <= ci[1] else [f"paired.{name}: diff {p['diff']} outside its ci95 {ci}"]


def dumps(res: dict) -> str:
    return json.dumps(res, indent=2) + "\n"


def baseline_of(path: Path) -> dict:
    """What a report compares its stage times with: another published run's figures."""
    try:
        b = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: cannot read a baseline results file ({e})") from None
    missing = [k for k in ("commit", "machine", "stage_minutes") if k not in b]
    if missing:
        raise ResultsError(f"{path}: a baseline needs the fields {', '.join(missing)} (a `./dev report --publish` file)")
    return {"file": str(path), "commit": b["commit"], "machine": b["machine"], "minutes": b.get("minutes"),
            "stage_minutes": b["stage_minutes"], "config_sha256": b.get("config_sha256"),
            "trained_tok_per_s": {s: (b.get(s) or {}).get("trained_tok_per_s") for s in ("critic", "rft", "dpo")}}


def write_summary(run: RunDir, baseline: Path | None = None, run_commit: str | None = None) -> dict:
    """Build the results, write summary.json and render report.md from them. `run_commit` names the
    commit a run was made at when its manifest predates recorded provenance (the checkout writing
    the report may be another)."""
    from pipelines.report import write_report

    now = None
    if not run.manifest.get("provenance"):  # a run from before provenance was recorded: detect it now
        cfg = run.root / "config.json"
        now = provenance(json.loads(cfg.read_text()) if cfg.exists() else {}, "", "")
        now["detected"] = "when the report was written (the run predates recorded provenance)"
        if run_commit:
            now["commit"] = run_commit
            now["detected"] += "; its commit given by --run-commit"
    elif run_commit:
        raise ResultsError(f"{run.root / 'manifest.json'}: the run recorded its commit; --run-commit is only "
                           "for runs that predate recorded provenance")
    res = build(run, now)
    if baseline is not None:
        res["baseline"] = baseline_of(baseline)
    (run.root / "summary.json").write_text(dumps(res))
    write_report(run, res)
    return res


def publish(run_root: Path, dest: Path, baseline: Path | None = None, run_commit: str | None = None) -> dict:
    """Rebuild a run's results, check them and copy them (and the plots) to `dest`."""
    run = RunDir(run_root)
    res = write_summary(run, baseline, run_commit)
    errs = check(res)
    if errs:
        raise ResultsError(f"{run.root / 'summary.json'}: " + "; ".join(errs))
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run.root / "summary.json", dest)
    plots = dest.with_name(dest.stem + "-plots")
    if (run.root / "plots").is_dir():
        shutil.copytree(run.root / "plots", plots, dirs_exist_ok=True)
    return res


def run_dir_parser(prog: str, doc: str, example: str) -> argparse.ArgumentParser:
    """The command line of a results writer: a run directory and an optional --publish path."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--publish", type=Path, help=f"copy the checked results here (e.g. {example})")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = run_dir_parser("./dev report", __doc__, "docs/results/cpu-demo.json")
    ap.add_argument("--baseline", type=Path, help="a published results file whose stage times the report sets beside")
    ap.add_argument("--run-commit", help="the commit a run was made at, for a run that predates recorded provenance")
    args = ap.parse_args(argv)
    if not (args.run_dir / "manifest.json").exists():
        print(f"error: {args.run_dir}: no manifest.json (not a run directory)", file=sys.stderr)
        return 2
    try:
        res = (publish(args.run_dir, args.publish, args.baseline, args.run_commit) if args.publish
               else write_summary(RunDir(args.run_dir), args.baseline, args.run_commit))
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s, share in (res.get("truncated") or {}).items():
        if share > TRUNCATION_WARN:
            print(f"warning: {s}: {share:.1%} of eval responses cut off (over {TRUNCATION_WARN:.0%})", file=sys.stderr)
    print(dumps(res), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
