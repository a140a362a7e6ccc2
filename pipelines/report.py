"""The run report: a markdown table plus PNG plots, written into the run directory."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.run_dir import RunDir


def _scores(path: Path) -> list[float]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            s = json.loads(line)["grade"]["score"]
        except (json.JSONDecodeError, KeyError):
            continue
        if s is not None:
            out.append(float(s))
    return out


def write_report(run: RunDir, command: str = "", machine: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = run.manifest["stages"]
    ev = (st.get("eval") or {}).get("metrics") or {}
    acc = ev.get("accuracy", {})
    plots = run.root / "plots"
    plots.mkdir(exist_ok=True)

    if acc:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        labels = list(acc)
        ax.bar(labels, [acc[k] * 100 for k in labels], color=["#999", "#4a90d9", "#2e7d32"][: len(labels)])
        for i, k in enumerate(labels):
            ax.text(i, acc[k] * 100 + 0.5, f"{acc[k] * 100:.1f}", ha="center")
        ax.set_ylabel("greedy accuracy (%)")
        ax.set_title(f"Held-out accuracy (n={ev.get('n_eval')})")
        fig.tight_layout()
        fig.savefig(plots / "accuracy.png", dpi=110)
        plt.close(fig)

    hist = {s: _scores(run.root / s / "rollout" / "lineage.jsonl") for s in ("rft", "dpo")}
    if any(hist.values()):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for s, vals in hist.items():
            if vals:
                ax.hist(vals, bins=[x + 0.5 for x in range(0, 11)], alpha=0.6, label=f"{s} samples")
        ax.set_xlabel("grade score (1-10)")
        ax.set_ylabel("responses")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plots / "scores.png", dpi=110)
        plt.close(fig)

    counts = {s: ((st.get(s) or {}).get("metrics") or {}) for s in ("rft", "dpo")}
    if any(counts.values()):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        names = [s for s in counts if counts[s]]
        ax.bar([f"{s} kept" for s in names], [counts[s].get("kept", 0) for s in names], color="#2e7d32")
        ax.bar([f"{s} rejected" for s in names], [counts[s].get("rejected", 0) for s in names], color="#c62828")
        ax.set_ylabel("samples")
        fig.tight_layout()
        fig.savefig(plots / "kept_rejected.png", dpi=110)
        plt.close(fig)

    crit = (st.get("critic") or {}).get("metrics") or {}
    lines = ["# Self-critique run report", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    if machine:
        lines += [f"Machine: {machine}", ""]
    lines += ["| stage | held-out greedy accuracy |", "| --- | --- |"]
    lines += [f"| {k} | {v * 100:.1f}% |" for k, v in acc.items()]
    lines += ["", f"Evaluated on {ev.get('n_eval', 0)} held-out problems.", ""]
    if crit:
        ca = crit.get("critic_accuracy")
        lines += ["## Critic", "",
                  f"- held-out accuracy (agreement with the rule label): "
                  f"{'n/a' if ca is None else f'{ca:.3f}'} on {crit.get('critic_n')} responses",
                  f"- balanced accuracy: {crit.get('critic_balanced_accuracy', 'n/a')}",
                  f"- ungraded judge outputs: {crit.get('critic_ungraded', 'n/a')}", ""]
    on_eval = ev.get("critic_on_eval") or {}
    if on_eval.get("critic_n"):
        lines += [f"- on {on_eval['critic_n']} of the eval stage's greedy responses (spread over the stages; "
                  f"{on_eval['critic_n_correct_label']} right by the rule): accuracy "
                  f"{on_eval['critic_accuracy']:.3f}, balanced {on_eval['critic_balanced_accuracy']:.3f}", ""]
    for s in ("rft", "dpo"):
        m = counts.get(s)
        if m:
            lines += [f"## {s.upper()}", ""] + [f"- {k}: {v}" for k, v in m.items()] + [""]
    if ev.get("by_category"):
        lines += ["## Accuracy by category", "", "| stage | " + " | ".join(next(iter(ev["by_category"].values()))) + " |",
                  "| --- |" + " --- |" * len(next(iter(ev["by_category"].values())))]
        for k, cats in ev["by_category"].items():
            lines.append(f"| {k} | " + " | ".join(f"{v * 100:.1f}%" for v in cats.values()) + " |")
        lines.append("")
    if ev.get("critic_scores"):
        lines += ["## Critic scores by category (MathUserEval-style)", ""]
        for k, cats in ev["critic_scores"].items():
            lines.append(f"- {k}: " + ", ".join(f"{c}: {v:.2f}" for c, v in cats.items()))
        lines.append("")
    lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in sorted(plots.glob("*.png"))] + [""]
    out = run.root / "report.md"
    out.write_text("\n".join(lines))
    return out
