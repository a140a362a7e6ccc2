"""Paired comparisons of two models on the same held-out problems, with their uncertainty.

Both models answer the same problems, so the per-problem differences carry the
comparison; resampling problems (not models) gives the interval a reader needs to tell
a gain from noise on a few hundred problems.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import combinations

import numpy as np

from core.answers import cut_off_unanswered, looping
from core.grading import RULE_SCORES
from core.records import GradedSample

STAGE_ORDER = ("base", "rft", "dpo")


def judge_cut_offs(graded: list[GradedSample]) -> list[GradedSample]:
    """The eval's grades with every response cut off before its answer marked wrong."""
    out = []
    for g in graded:
        if cut_off_unanswered(g.sample.response, g.sample.finish_reason):
            g = replace(g, grade=replace(g.grade, verdict="incorrect", score=RULE_SCORES["incorrect"],
                                         reason="cut off by the token budget before a final answer"))
        out.append(g)
    return out


def stop_kind(response: str, finish_reason: str, longer: tuple[str, str] | None = None) -> str:
    """"finished"; "cut off" (a larger budget lets it finish); "looping" (stopped inside a repetition
    loop); or "runaway" (still unfinished at the recheck budget, yet not an exact loop).

    `longer` is the same greedy response generated again with a larger budget, as (text,
    finish_reason): whether more tokens let it finish is then observed, not guessed. Without it a
    cut-off response that is not an exact loop counts as cut off.
    """
    if finish_reason != "length":
        return "finished"
    if longer is None:
        return "looping" if looping(response) else "cut off"
    text, reason = longer
    if reason != "length":
        return "cut off"
    return "looping" if looping(text) or looping(response) else "runaway"


def eval_outcomes(graded: list[GradedSample], recheck: list[GradedSample] | None = None) -> dict:
    """Accuracy, per-category accuracy, per-problem correctness and the stop shares of one model.

    recheck: the cut-off responses generated again with a larger budget (by problem id).
    """
    judged = judge_cut_offs(graded)
    correct = {g.sample.problem.id: g.grade.verdict == "correct" for g in judged}
    by_cat: dict[str, list[bool]] = {}
    for g in judged:
        by_cat.setdefault(g.sample.problem.category or "all", []).append(correct[g.sample.problem.id])
    n = len(judged)
    longer = {g.sample.problem.id: (g.sample.response, g.sample.finish_reason) for g in recheck or []}
    stops = [stop_kind(g.sample.response, g.sample.finish_reason, longer.get(g.sample.problem.id)) for g in judged]
    return {"accuracy": sum(correct.values()) / max(n, 1), "n": n,
            "by_category": {k: sum(v) / len(v) for k, v in sorted(by_cat.items())},
            # cut off by the budget: a larger one lets (or, unrechecked, could let) it finish
            "truncated": sum(s == "cut off" for s in stops) / max(n, 1),
            "looping": sum(s == "looping" for s in stops) / max(n, 1),
            "runaway": sum(s == "runaway" for s in stops) / max(n, 1),
            "cut_off_unanswered": sum(cut_off_unanswered(g.sample.response, g.sample.finish_reason) for g in graded),
            "correct": correct, "graded": judged}


def paired_difference(before: list[bool], after: list[bool], *, resamples: int = 10_000, seed: int = 0) -> dict:
    """Accuracy of `after` minus `before` on the same problems (in the same order).

    ci95: percentile bootstrap over problems; up/down: problems that went wrong->right
    and right->wrong.
    """
    if len(before) != len(after):
        raise ValueError(f"paired outcomes differ in length: {len(before)} vs {len(after)}")
    if not before:
        return {"n": 0, "diff": None, "ci95": [None, None], "up": 0, "down": 0}
    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"n": len(d), "diff": float(d.mean()), "ci95": [float(lo), float(hi)],
            "up": int((d > 0).sum()), "down": int((d < 0).sum())}


def paired_table(correct: dict[str, dict[str, bool]], *, seed: int = 0) -> dict:
    """Every pair of stages, later_vs_earlier (e.g. dpo_vs_base), on the problems both answered."""
    labels = sorted(correct, key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER), s))
    out = {}
    for early, late in combinations(labels, 2):
        ids = sorted(correct[early].keys() & correct[late].keys())
        out[f"{late}_vs_{early}"] = paired_difference([correct[early][i] for i in ids],
                                                      [correct[late][i] for i in ids], seed=seed)
    return out


def mean_and_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; None for fewer than two values)."""
    if not values:
        return None, None
    a = np.asarray(values, dtype=float)
    return float(a.mean()), (float(a.std(ddof=1)) if len(a) > 1 else None)


def accuracy_interval(outcomes: list[bool], *, resamples: int = 10_000, seed: int = 0) -> list[float | None]:
    """Percentile-bootstrap 95% interval of one model's accuracy over the problems."""
    if not outcomes:
        return [None, None]
    a = np.asarray(outcomes, dtype=float)
    rng = np.random.default_rng(seed)
    lo, hi = np.percentile(a[rng.integers(0, len(a), size=(resamples, len(a)))].mean(axis=1), [2.5, 97.5])
    return [float(lo), float(hi)]
