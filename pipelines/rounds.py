"""The by-round results of an iterative run: accuracy with intervals and critic quality.

Each round's final model answered the same held-out problems, so rounds compare paired,
from the eval lineages; critic figures come from each round's manifest. Writes
`<run_dir>/rounds.json`, `rounds.md` and `plots/rounds.png`.

    python -m pipelines.rounds RUN_DIR [--publish docs/results/rounds.json]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from core.rounds import round_dir
from core.stats import accuracy_interval, paired_difference
from pipelines.results import ResultsError, dumps, run_dir_parser
from pipelines.run_dir import RunDir

CRITIC_KEYS = ("critic_balanced_accuracy", "critic_auc", "flawed_work_detection", "critic_n")


def _outcomes(stage_dir: Path) -> dict | None:
    from pipelines.stages import eval_dir_outcomes

    return eval_dir_outcomes(stage_dir) if (stage_dir / "lineage.jsonl").exists() else None


def _paired(before: dict, after: dict, seed: int) -> dict:
    ids = sorted(before["correct"].keys() & after["correct"].keys())
    return paired_difference([before["correct"][i] for i in ids], [after["correct"][i] for i in ids], seed=seed)


def _accuracy(o: dict, seed: int) -> dict:
    return {"accuracy": o["accuracy"], "n": o["n"], "truncated": o["truncated"],
            "ci95": accuracy_interval(list(o["correct"].values()), seed=seed)}


def round_row(root: Path, k: int, base: dict, previous: dict, seed: int) -> tuple[dict, dict] | None:
    """Round k's figures and its final model's outcomes; None when round k has not been evaluated."""
    d = RunDir(round_dir(root, k))
    model = "dpo" if (d.root / "eval" / "dpo" / "lineage.jsonl").exists() else "rft"
    o = _outcomes(d.root / "eval" / model)
    if o is None or not d.done("eval"):
        return None
    crit = (d.done("critic") or {}).get("metrics") or {}
    row = {"round": k, "model": model, **_accuracy(o, seed), "vs_base": _paired(base, o, seed),
           "vs_previous_round": _paired(previous, o, seed), **{c: crit.get(c) for c in CRITIC_KEYS},
           "critic_init_model": crit.get("critic_init_model"), "starts_from": (d.manifest.get("round") or {})
           .get("starts_from")}
    return row, o


def build_rounds(root: Path) -> dict:
    run = RunDir(root)
    cfg = json.loads((run.root / "config.json").read_text())
    seed, rounds = cfg["run"]["seed"], cfg["run"].get("rounds", 1)
    base = _outcomes(run.root / "eval" / "base")
    if base is None:
        raise ResultsError(f"{run.root}: round 1 has no base-model eval (eval/base/lineage.jsonl)")
    rows, previous = [], base
    for k in range(1, rounds + 1):
        got = round_row(run.root, k, base, previous, seed)
        if got is None:
            break
        rows.append(got[0])
        previous = got[1]
    prov = run.manifest.get("provenance") or {}
    return {"rounds": rows, "base": _accuracy(base, seed), "rounds_planned": rounds,
            "round_critic": cfg["run"].get("round_critic"), "round_problems": cfg["run"].get("round_problems"),
            **{k: prov.get(k) for k in ("command", "config", "machine", "commit", "config_sha256")}}


def check_rounds(res: dict) -> list[str]:
    errs = [] if res.get("rounds") else ["rounds: no evaluated round"]
    for row in res.get("rounds") or []:
        for k in ("accuracy", "ci95", "critic_balanced_accuracy"):
            if row.get(k) is None:
                errs.append(f"rounds[{row.get('round')}]: no {k!r}")
    for k in ("machine", "commit", "config_sha256"):
        if not res.get(k):
            errs.append(f"missing {k!r}")
    return errs


def render(res: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{x * 100:.1f}"

    b = res["base"]
    lines = ["# Self-critique rounds", "", "| model | accuracy % | 95% CI | vs previous (pts, 95% CI) | "
             "critic balanced acc. | flawed-work detection |", "|---|---|---|---|---|---|",
             f"| base | {pct(b['accuracy'])} | {pct(b['ci95'][0])}–{pct(b['ci95'][1])} | | | |"]
    for r in res["rounds"]:
        p = r["vs_previous_round"]
        lines.append(f"| round {r['round']} ({r['model']}) | {pct(r['accuracy'])} | {pct(r['ci95'][0])}–"
                     f"{pct(r['ci95'][1])} | {pct(p['diff'])} [{pct(p['ci95'][0])}, {pct(p['ci95'][1])}] | "
                     f"{pct(r['critic_balanced_accuracy'])} | {pct(r['flawed_work_detection'])} |")
    m = res.get("machine") or {}
    lines += ["", f"Machine: {m.get('cpu_model')}, {m.get('cores')} cores; commit {res.get('commit')}."]
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    rows = [{"round": 0, **res["base"], "critic_balanced_accuracy": None}] + res["rounds"]
    xs = [r["round"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.errorbar(xs, [r["accuracy"] * 100 for r in rows], fmt="o-",
                yerr=[[(r["accuracy"] - r["ci95"][0]) * 100 for r in rows],
                      [(r["ci95"][1] - r["accuracy"]) * 100 for r in rows]], label="held-out accuracy (95% CI)")
    crit = [(r["round"], r["critic_balanced_accuracy"] * 100) for r in rows if r["critic_balanced_accuracy"]]
    if crit:
        ax.plot(*zip(*crit), "s--", label="critic balanced accuracy")
    ax.set_xticks(xs, ["base"] + [f"round {x}" for x in xs[1:]])
    ax.set_ylabel("%")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_rounds(run: RunDir) -> dict:
    res = build_rounds(run.root)
    (run.root / "rounds.json").write_text(dumps(res))
    (run.root / "rounds.md").write_text(render(res))
    plot(res, run.root / "plots" / "rounds.png")
    return res


def main(argv: list[str] | None = None) -> int:
    args = run_dir_parser("python -m pipelines.rounds", __doc__, "docs/results/rounds.json").parse_args(argv)
    try:
        res = write_rounds(RunDir(args.run_dir))
        errs = check_rounds(res)
        if args.publish and errs:
            raise ResultsError(f"{args.run_dir / 'rounds.json'}: " + "; ".join(errs))
    except (ResultsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.publish:
        args.publish.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.run_dir / "rounds.json", args.publish)
    print(render(res), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
