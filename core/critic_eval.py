"""How good is the critic: a held-out probe and its metrics, as pure functions.

A critic that calls everything wrong must not pass, so the gate is balanced accuracy on a
set that holds both classes; the score's ranking (AUC against the rule label), the mean
score per true band, and flawed-work detection (a right response with one intermediate
result made false, final answer unchanged, must score below the clean one) say whether it
reads the work.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.critique_data import flawed_copy, reworded_solution, salt_of
from core.records import GradedSample, Problem
from core.work_grade import WorkGrade, grade_work


@dataclass(frozen=True)
class ProbeItem:
    key: str
    problem: Problem
    response: str
    truth: WorkGrade
    rule_verdict: str  # the final answer's verdict ("correct" / "incorrect")
    kind: str  # sampled | reference | reworded | flawed
    clean_key: str = ""  # a flawed copy's original


def heldout_probe(graded: list[GradedSample], *, keep_threshold: float, min_per_class: int = 25,
                  add_references: bool = True) -> list[ProbeItem]:
    """Sampled responses with their true bands, topped up with right ones (the reference, a
    rewording of it) while the passing class is short, plus a flawed copy of every passing one."""
    items = [ProbeItem(g.key, g.sample.problem, g.sample.response, wg, g.grade.verdict, "sampled")
             for g in graded if (wg := grade_work(g.sample.problem, g.sample.response, g.grade.verdict))]
    if add_references:
        problems = list({g.sample.problem.id: g.sample.problem for g in graded}.values())
        for kind, text_of in (("reference", lambda p: p.reference), ("reworded", reworded_solution)):
            if sum(it.truth.score >= keep_threshold for it in items) >= min_per_class:
                break
            items += _right_items(problems, kind, text_of)
    items += [f for it in items if it.truth.score >= keep_threshold and (f := _flawed_item(it))]
    return items


def _right_items(problems: list[Problem], kind: str, text_of) -> list[ProbeItem]:
    out = []
    for p in problems:
        text = text_of(p)
        wg = grade_work(p, text, "correct") if text else None
        if wg is not None:
            out.append(ProbeItem(f"{p.id}#{kind}", p, text, wg, "correct", kind))
    return out


def _flawed_item(it: ProbeItem) -> ProbeItem | None:
    text = flawed_copy(it.response, salt_of(it.key))
    wg = grade_work(it.problem, text, it.rule_verdict) if text else None
    if wg is None:
        return None
    return ProbeItem(f"{it.key}#flawed", it.problem, text, wg, it.rule_verdict, "flawed", it.key)


def band_of(score: float) -> str:
    return "1-2" if score < 3 else "3-5" if score < 6 else "6-8" if score < 9 else "9-10"


def auc(scores_pos: list[float], scores_neg: list[float]) -> float | None:
    """P(a positive outscores a negative), ties half: the Mann-Whitney statistic."""
    if not scores_pos or not scores_neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in scores_pos for n in scores_neg)
    return wins / (len(scores_pos) * len(scores_neg))


def critic_report(items: list[ProbeItem], scores: dict[str, float | None], keep_threshold: float) -> dict:
    """Metrics of the judge's scores (None: no readable score, counted as a miss)."""
    s = {it.key: scores.get(it.key) for it in items}
    pos = [it for it in items if it.truth.score >= keep_threshold]
    neg = [it for it in items if it.truth.score < keep_threshold]

    def passes(it):
        return s[it.key] is not None and s[it.key] >= keep_threshold

    rates = [sum(passes(it) == want for it in grp) / len(grp) for grp, want in ((pos, True), (neg, False)) if grp]
    by_band: dict[int, list[float]] = {}
    for it in items:
        if s[it.key] is not None:
            by_band.setdefault(it.truth.score, []).append(s[it.key])
    flawed = [it for it in items if it.kind == "flawed" and s.get(it.clean_key) is not None]
    caught = sum(s[it.key] is not None and s[it.key] < s[it.clean_key] for it in flawed)
    rule = [(it.rule_verdict, s[it.key] or 0.0) for it in items]
    return {
        "critic_n": len(items), "critic_n_pass": len(pos), "critic_n_fail": len(neg),
        "critic_accuracy": sum(passes(it) == (it.truth.score >= keep_threshold) for it in items) / len(items)
        if items else None,
        "critic_balanced_accuracy": sum(rates) / len(rates) if rates else None,
        "critic_auc": auc([x for v, x in rule if v == "correct"], [x for v, x in rule if v == "incorrect"]),
        "critic_mean_score_by_band": {str(b): sum(v) / len(v) for b, v in sorted(by_band.items())},
        "flawed_work_detection": caught / len(flawed) if flawed else None, "flawed_n": len(flawed),
        "critic_bands_used": sorted({band_of(x) for x in s.values() if x is not None}),
        "critic_ungraded": sum(x is None for x in s.values()),
    }


def balanced_pick(graded: list[GradedSample], n: int) -> list[GradedSample]:
    """Up to n responses, half right by the rule where there are enough, each half an even
    spread over the list (which runs stage by stage, so every stage is represented)."""
    right = [g for g in graded if g.grade.verdict == "correct"]
    other = [g for g in graded if g.grade.verdict != "correct"]
    k = min(len(right), n // 2)
    return _spread(right, k) + _spread(other, n - k)


def _spread(xs: list, k: int) -> list:
    if k <= 0 or not xs:
        return []
    if k >= len(xs):
        return list(xs)
    return [xs[int(i * len(xs) / k)] for i in range(k)]


def selection_summary(graded: list[GradedSample], threshold: float, kept_keys: set[str] | None = None,
                      n_examples: int = 3) -> dict:
    """Who decided the stage's data: graders behind kept samples, and where the critic's
    pass/fail differed from the rule's verdict on the final answer (with examples).

    The lineage is written before the group decision, so the kept keys come from the
    buffer's decisions log when given."""
    decided: dict[str, int] = {}
    for g in graded:
        if (g.key in kept_keys) if kept_keys is not None else g.kept:
            decided[g.grade.grader] = decided.get(g.grade.grader, 0) + 1
    both = [g for g in graded if g.grade.model_score is not None and g.grade.rule_verdict in ("correct", "incorrect")]
    differ = [g for g in both if (g.grade.model_score >= threshold) != (g.grade.rule_verdict == "correct")]
    return {
        "decided_by_kept": decided,
        "judged": sum(g.grade.model_score is not None for g in graded),
        "critic_vs_rule_compared": len(both),
        "critic_vs_rule_differ_share": len(differ) / len(both) if both else None,
        "lowered_by_rule": sum(g.grade.grader == "model, lowered by rule" for g in graded),
        "differ_examples": [{"key": g.key, "response": g.sample.response[-300:], "critic_score": g.grade.model_score,
                             "critic_analysis": g.grade.analysis[:300], "rule_verdict": g.grade.rule_verdict}
                            for g in differ[:n_examples]],
    }
