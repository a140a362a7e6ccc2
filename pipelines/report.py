"""The run report: markdown rendered from the results dict (pipelines/results.py), plus PNG plots.

Every figure in report.md is one that summary.json holds; only the score histogram reads
the rollout lineage (a distribution, not a quoted figure).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.results import TRUNCATION_WARN
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


# ------------------------------------------------------------------ plots


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy(res: dict, plots: Path) -> None:
    import matplotlib.pyplot as plt

    acc = res.get("accuracy") or {}
    if not acc:
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = list(acc)
    ax.bar(labels, [acc[k] * 100 for k in labels], color=["#999", "#4a90d9", "#2e7d32"][: len(labels)])
    for i, k in enumerate(labels):
        ax.text(i, acc[k] * 100 + 0.5, f"{acc[k] * 100:.1f}", ha="center")
    ax.set_ylim(0, max(10.0, 1.15 * max(acc[k] * 100 for k in labels)))  # room for the labels, even at 0%
    ax.set_ylabel("greedy accuracy (%)")
    ax.set_title(f"Held-out accuracy (n={res.get('n_eval')})")
    _save(fig, plots / "accuracy.png")


def plot_scores(run: RunDir, plots: Path) -> None:
    import matplotlib.pyplot as plt

    hist = {s: _scores(run.root / s / "rollout" / "lineage.jsonl") for s in ("rft", "dpo")}
    if not any(hist.values()):
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for s, vals in hist.items():
        if vals:
            ax.hist(vals, bins=[x + 0.5 for x in range(0, 11)], alpha=0.6, label=f"{s} samples")
    ax.set_xlabel("grade score (1-10)")
    ax.set_ylabel("responses")
    ax.legend()
    _save(fig, plots / "scores.png")


def plot_kept(res: dict, plots: Path) -> None:
    import matplotlib.pyplot as plt

    names = [s for s in ("rft", "dpo") if res.get(s)]
    if not names:
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([f"{s} kept" for s in names], [res[s].get("kept", 0) for s in names], color="#2e7d32")
    ax.bar([f"{s} rejected" for s in names], [res[s].get("rejected", 0) for s in names], color="#c62828")
    ax.set_ylabel("samples")
    _save(fig, plots / "kept_rejected.png")


# ------------------------------------------------------------------ markdown sections


def machine_line(m) -> str:
    if not isinstance(m, dict):
        return str(m or "")
    bf16 = "native bf16" if m.get("bf16_native") else "no native bf16"
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return f"{m.get('cpu_model')}, {m.get('cores')} cores, {bf16}{gpu}; torch {m.get('torch')}, vLLM {m.get('vllm')}"


def md_header(res: dict) -> list[str]:
    lines = ["# Self-critique run report", ""]
    for label, value in (("Command", res.get("command") and f"`{res['command']}`"),
                         ("Machine", machine_line(res.get("machine"))), ("Commit", res.get("commit")),
                         ("Config sha256", res.get("config_sha256"))):
        if value:
            lines += [f"{label}: {value}", ""]
    if res.get("minutes"):
        per = ", ".join(f"{s} {m:.1f}" for s, m in (res.get("stage_minutes") or {}).items())
        lines += [f"Wall time: {res['minutes']:.1f} minutes ({per})", ""]
        resumed = {s: n for s, n in (res.get("stage_attempts") or {}).items() if (n or 1) > 1}
        if resumed:
            lines += ["Resumed: " + ", ".join(f"{s} ({n} attempts)" for s, n in resumed.items()) + ". The wall time is "
                      "the last driver run's; a resumed stage's minutes run from its first start, so they include "
                      "the time it lay dead.", ""]
    return lines


def _pct(x) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def md_accuracy(res: dict) -> list[str]:
    acc, tr, loop = res.get("accuracy") or {}, res.get("truncated") or {}, res.get("looping") or {}
    run = res.get("runaway") or {}
    lines = ["| stage | held-out greedy accuracy | cut off by the budget | stopped in a loop | ran away |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {k} | {v * 100:.1f}% | {_pct(tr.get(k))} | {_pct(loop.get(k))} | {_pct(run.get(k))} |"
              for k, v in acc.items()]
    lines += ["", f"Evaluated on {res.get('n_eval', 0)} held-out problems (greedy, at most "
              f"{res.get('eval_max_new_tokens', 'n/a')} new tokens). A response stopped before it states a final "
              "answer counts as wrong. " + stops_note(res.get("recheck_max_new_tokens")), ""]
    for k, share in tr.items():
        if share > TRUNCATION_WARN:
            lines += [f"**Warning:** {share * 100:.1f}% of {k}'s responses were cut off by the token budget "
                      f"(over {TRUNCATION_WARN:.0%}): its accuracy measures the budget as much as the model.", ""]
    return lines


def stops_note(recheck: int | None) -> str:
    if not recheck:  # runs from before the recheck
        return ("\"Stopped in a loop\": it was repeating the same text when the budget stopped it, counted apart "
                "from the budget's cut-offs.")
    return (f"Every response the budget stopped was generated again with {recheck} tokens. \"Cut off by the "
            "budget\": it then finished, so the budget decided its grade. \"Stopped in a loop\": it was "
            "repeating the same text. \"Ran away\": still unfinished with the larger budget, not an exact loop. "
            "Only the first kind measures the budget rather than the model.")


def md_paired(res: dict) -> list[str]:
    paired = res.get("paired") or {}
    if not paired:
        return []
    lines = ["## Paired differences (same problems, bootstrap 95% interval)", "",
             "| comparison | difference | 95% interval | wrong to right | right to wrong |",
             "| --- | --- | --- | --- | --- |"]
    for name, p in paired.items():
        if p.get("diff") is None:
            continue
        lo, hi = p["ci95"]
        lines.append(f"| {name.replace('_', ' ')} | {p['diff'] * 100:+.1f} pts | [{lo * 100:+.1f}, {hi * 100:+.1f}] "
                     f"| {p['up']} | {p['down']} |")
    return lines + ["", "An interval that contains 0 does not tell the two apart.", ""]


def md_critic(res: dict) -> list[str]:
    lines = []
    for title, m in (("critic stage's held-out probe", res.get("critic") or {}),
                     ("eval responses (base, RFT, DPO) and their flawed copies", res.get("critic_on_eval") or {})):
        if m.get("critic_n"):
            lines += critic_lines(title, m)
    return (["## Critic", ""] + lines) if lines else []


def critic_lines(title: str, m: dict) -> list[str]:
    """One probe's figures: the gate's balanced accuracy, ranking, per-band means, flawed work."""
    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    bands = ", ".join(f"{b}: {v:.1f}" for b, v in (m.get("critic_mean_score_by_band") or {}).items())
    return [f"On the {title}: {m['critic_n']} responses, {m.get('critic_n_pass')} passing and "
            f"{m.get('critic_n_fail')} not (true band >= keep threshold)", "",
            f"- balanced accuracy {f(m.get('critic_balanced_accuracy'))} (accuracy {f(m.get('critic_accuracy'))})",
            f"- AUC of the critic's score against the rule label {f(m.get('critic_auc'))}",
            f"- flawed-work detection {f(m.get('flawed_work_detection'))} on {m.get('flawed_n')} pairs "
            "(a right response with one intermediate result made false scores below the clean one)",
            f"- mean critic score by true band: {bands or 'n/a'}",
            f"- score bands in the critic's outputs: {', '.join(m.get('critic_bands_used') or []) or 'n/a'}; "
            f"ungraded outputs {m.get('critic_ungraded')}", ""]


def md_selection(res: dict) -> list[str]:
    """Who chose the training data, and where the critic and the rule disagreed (with examples)."""
    lines = []
    for s in ("rft", "dpo"):
        sel = (res.get(s) or {}).get("selection") or {}
        if not sel:
            continue
        share = sel.get("critic_vs_rule_differ_share")
        lines += [f"- {s.upper()}: kept or paired samples by grader {sel.get('decided_by_kept')}; the critic judged "
                  f"{sel.get('judged')} samples; its pass/fail differed from the rule's verdict on "
                  f"{'n/a' if share is None else f'{share:.1%}'} of {sel.get('critic_vs_rule_compared')}; "
                  f"{sel.get('lowered_by_rule')} scores lowered by the rule"]
        lines += [f"  - e.g. critic {x['critic_score']}, rule {x['rule_verdict']}: "
                  f"\"{_one_line(x['critic_analysis'])}\" on \"...{_one_line(x['response'][-120:])}\""
                  for x in sel.get("differ_examples", [])]
    return (["## Who selected the data", ""] + lines + [""]) if lines else []


def _one_line(t: str) -> str:
    return " ".join(str(t).split()).replace("|", "/")


def md_stages(res: dict) -> list[str]:
    lines = []
    for s in ("rft", "dpo"):
        if res.get(s):
            lines += [f"## {s.upper()}", ""] + [f"- {k}: {v}" for k, v in res[s].items() if k != "selection"] + [""]
    return lines


def md_learner(res: dict) -> list[str]:
    """Each training stage's minutes and the learner's own tokens/s, beside a baseline run's."""
    base = res.get("baseline") or {}
    minutes, b_min = res.get("stage_minutes") or {}, base.get("stage_minutes") or {}
    b_tok = base.get("trained_tok_per_s") or {}
    at = f" at {str(base.get('commit'))[:7]}" if base else ""
    lines = ["## Stage times and learner throughput", "",
             f"| stage | minutes | minutes{at} | optimizer steps | seconds in steps | tokens trained | tokens/s | "
             f"tokens/s{at} |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in ("critic", "rft", "dpo", "eval"):
        m = res.get(s) or {}
        steps = m.get("critic_steps", m.get("train_steps"))
        lines.append(f"| {s} | {_num(minutes.get(s))} | {_num(b_min.get(s))} | {_num(steps, 0)} | "
                     f"{_num(m.get('train_step_seconds'))} | {_num(m.get('train_seq_tokens'), 0)} | "
                     f"{_num(m.get('trained_tok_per_s'))} | {_num(b_tok.get(s))} |")
    lines += ["", "Tokens: prompt and response positions of every trained sequence; seconds: in optimizer steps "
              "only, not waiting for data. Minutes: the whole stage (sampling, judging, training)."]
    if base:
        lines += [f"Baseline: `{base['file']}` ({machine_line(base.get('machine'))})."]
        if (base.get("machine") or {}).get("cpu_model") != (res.get("machine") or {}).get("cpu_model"):
            lines += ["**The baseline ran on another CPU model: its times do not compare.**"]
        if base.get("config_sha256") != res.get("config_sha256"):
            lines += ["The baseline ran another config: its stage minutes compare only as far as the two configs do."]
        if not any(b_tok.values()):
            lines += ["The baseline's learner recorded no step seconds, so its tokens/s are blank."]
    return lines + [""]


def _num(x, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def md_categories(res: dict) -> list[str]:
    lines = []
    by_cat = res.get("by_category") or {}
    if by_cat:
        cats = list(next(iter(by_cat.values())))
        lines += ["## Accuracy by category", "", "| stage | " + " | ".join(cats) + " |",
                  "| --- |" + " --- |" * len(cats)]
        for k, per in by_cat.items():
            lines.append(f"| {k} | " + " | ".join(f"{v * 100:.1f}%" for v in per.values()) + " |")
        lines.append("")
    if res.get("critic_scores"):
        lines += ["## Critic scores by category (MathUserEval-style)", ""]
        for k, per in res["critic_scores"].items():
            lines.append(f"- {k}: " + ", ".join(f"{c}: {v:.2f}" for c, v in per.items()))
        lines.append("")
    return lines


def render_markdown(res: dict, plot_names: list[str]) -> str:
    lines = (md_header(res) + md_accuracy(res) + md_paired(res) + md_critic(res) + md_selection(res)
             + md_learner(res) + md_stages(res) + md_categories(res))
    lines += ["## Plots", ""] + [f"![{Path(p).stem}](plots/{p})" for p in plot_names] + [""]
    return "\n".join(lines)


def write_report(run: RunDir, res: dict) -> Path:
    """report.md and plots/*.png in the run directory, from the results dict `res`."""
    import matplotlib

    matplotlib.use("Agg")
    plots = run.root / "plots"
    plots.mkdir(exist_ok=True)
    plot_accuracy(res, plots)
    plot_scores(run, plots)
    plot_kept(res, plots)
    out = run.root / "report.md"
    out.write_text(render_markdown(res, sorted(p.name for p in plots.glob("*.png"))))
    return out
