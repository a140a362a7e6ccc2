"""Pure decisions on records: judge parsing, grade combination, RFT keep, DPO pairing.

No Ray in here. Actors call these; tests exercise them exhaustively.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace

from core.answers import AnswerCheck, canonical_answer, extract_final_answer
from core.critique_data import answer_swapped, flawed_copy, reworded_solution, salt_of, slip_copy
from core.prompts import judge_messages, solver_messages, wrong_final_answer
from core.records import Grade, GradedSample, Pair, Problem, SFTExample
from core.work_grade import WorkGrade, grade_work

# "Score: 8", "**Score:** 8", "**Score**: 8", "Score：8", "score = 8/10". Not "underscore: 4",
# not "Score: 1e3" (that is not 1), and a denominator other than 10 is another scale.
# Spaces and markdown stars around the colon are one possessive class ([\s*]*+): with
# "\s*\**\s*" on both sides, "score" + 400 spaces + ":" + 400 spaces took seconds
# (cubic backtracking) and a 2,000-character judge tail minutes.
_SCORE_RE = re.compile(
    r"(?<![A-Za-z])\**score[\s*]*+[:：=][\s*]*+(-?\d+(?:\.\d+)?)(?:\s*+/\s*+(\d+))?(?![A-Za-z0-9_])",
    re.IGNORECASE,
)

# Rule verdicts map onto the paper's bands: 9-10 fully right, 1-2 wrong.
RULE_SCORES = {"correct": 9.0, "incorrect": 2.0}
# The most a critic score can be when the final answer is wrong: a slip's band (3-4),
# below any keep threshold.
RULE_CAP = 4.0


def parse_judge_output(text: str, threshold: float = 6.0) -> Grade:
    """Read the judge's last 'Score: N'. No score or out of range -> ungraded, with why."""
    if not isinstance(text, str) or not text.strip():
        return Grade(None, "unknown", "", "model", "judge output was empty")
    tail = text[-2000:]
    found = _SCORE_RE.findall(tail)
    analysis = _SCORE_RE.split(tail)[0].strip()[:500]
    if not found:
        return Grade(None, "unknown", analysis, "model", "no 'Score: N' line in judge output")
    number, denominator = found[-1]
    try:
        score = float(number)
    except ValueError:
        return Grade(None, "unknown", analysis, "model", f"unreadable score {number!r}")
    if denominator and int(denominator) != 10:
        return Grade(None, "unknown", analysis, "model", f"score {number}/{denominator} is not on the 1..10 scale")
    if not 1 <= score <= 10:
        return Grade(None, "unknown", analysis, "model", f"score {score:g} outside 1..10")
    verdict = "correct" if score >= threshold else "incorrect"
    return Grade(score, verdict, analysis, "model", "judge score")


def rule_grade(check: AnswerCheck) -> Grade:
    if check.verdict == "unparseable":
        return Grade(None, "unknown", "", "rule", check.reason)
    return Grade(RULE_SCORES[check.verdict], check.verdict, f"final answer {check.extracted!r}", "rule", check.reason)


def combine_grades(policy: str, rule: Grade | None, model: Grade | None, has_reference_answer: bool) -> Grade:
    """Combine per policy: rule | model | rule_else_model | both (agreement recorded)."""
    if policy == "rule":
        return rule or Grade(None, "unknown", "", "rule", "rule grader did not run")
    if policy == "model":
        return model or Grade(None, "unknown", "", "model", "model grader did not run")
    if policy == "rule_else_model":
        if has_reference_answer and rule is not None and rule.score is not None:
            return rule
        return model or rule or Grade(None, "unknown", "", "none", "no grader produced a grade")
    if policy == "model_rule_cap":
        return critic_capped_by_rule(rule, model)
    if policy == "both":
        if rule is None or rule.score is None:
            return model or Grade(None, "unknown", "", "none", "no grader produced a grade")
        if model is None or model.score is None:
            return Grade(rule.score, rule.verdict, rule.analysis, "rule", f"{rule.reason}; model ungraded", None)
        agree = rule.verdict == model.verdict
        # The rule check is exact where it applies; the judge refines within its band.
        return Grade(rule.score if not agree else (rule.score + model.score) / 2, rule.verdict,
                     model.analysis, "rule+model", f"rule: {rule.reason}; model: {model.reason}", agree)
    raise ValueError(f"unknown grading policy {policy!r}")


def judge_needed(policy: str, rules: list[Grade | None], judge_rule_failures: bool = True) -> list[int]:
    """Indices of the samples the judge must read: only where its grade can matter under the policy.

    Under model_rule_cap a response the rule already failed is capped below every keep
    threshold whatever the critic says. Unjudged, it is graded at the cap itself, so RFT keeps
    the same and a DPO pair against it needs a chosen score at least the cap plus the gap:
    never a pair that judging would not also allow (the rejected one among equals is then
    the first, not the lowest-scored).
    """
    def rule_failed(r: Grade | None) -> bool:
        return r is not None and r.score is not None and r.verdict == "incorrect"

    if policy == "rule_else_model":
        return [i for i, r in enumerate(rules) if r is None or r.score is None]
    if policy == "model_rule_cap" and not judge_rule_failures:
        return [i for i, r in enumerate(rules) if not rule_failed(r)]
    if policy in ("model", "both", "model_rule_cap"):
        return list(range(len(rules)))
    return []


def critic_capped_by_rule(rule: Grade | None, model: Grade | None) -> Grade:
    """The critic's score decides; a wrong final answer (rule check) may only lower it.

    A rule-incorrect response is capped at RULE_CAP, below every keep threshold, and its
    verdict is incorrect. Where the judge wrote no readable score, the rule grade stands
    in and says so. The rule verdict is recorded beside the critic's score either way.
    """
    rv = rule.verdict if rule is not None and rule.score is not None else ""
    if model is None and rv == "incorrect":  # the judge was not asked (judge_needed)
        # The cap, the most the critic's grade could have been: a DPO pair against this response
        # then needs a chosen score of at least the cap plus the gap, as it would with any judged one.
        return replace(rule, score=RULE_CAP, grader="rule", rule_verdict=rv,
                       reason=f"{rule.reason}; judge not asked: a wrong final answer caps every grade at {RULE_CAP:g}")
    if model is None or model.score is None:
        if rv:
            why = model.reason if model is not None else "judge did not run"
            return replace(rule, grader="rule (judge ungraded)", reason=f"{rule.reason}; {why}", rule_verdict=rv)
        return model or Grade(None, "unknown", "", "none", "no grader produced a grade")
    score, verdict, grader = model.score, model.verdict, "model"
    if rv == "incorrect":
        verdict = "incorrect"
        if score > RULE_CAP:
            score, grader = RULE_CAP, "model, lowered by rule"
    reason = model.reason + (f"; rule: {rule.reason}" if rv else "")
    return Grade(score, verdict, model.analysis, grader, reason, (model.verdict == rv) if rv else None,
                 rule_verdict=rv, model_score=model.score)


def _reasoning_signature(text: str) -> str:
    """Numbers in order: two responses with the same arithmetic are the same reasoning."""
    return " ".join(re.findall(r"\d+(?:\.\d+)?", text[-3000:]))


def select_for_rft(group: list[GradedSample], threshold: float, max_kept: int) -> list[GradedSample]:
    """Mark each sample kept or rejected (with the reason) and return the whole group.

    Keep when the grade passes the threshold; among passers keep diverse ones:
    distinct reasoning first, preferring distinct final answers, up to max_kept.
    """
    passed = []
    for g in sorted(group, key=lambda g: (-(g.grade.score or 0), g.sample.sample_index)):
        if g.grade.score is None:
            g.kept, g.keep_reason = False, f"ungraded: {g.grade.reason}"
        elif g.grade.rule_verdict == "incorrect":
            g.kept, g.keep_reason = False, "rule check: final answer wrong"
        elif g.grade.score < threshold:
            g.kept, g.keep_reason = False, f"score {g.grade.score:g} < {threshold:g}"
        elif g.sample.finish_reason == "length":
            g.kept, g.keep_reason = False, "truncated at max tokens"
        else:
            passed.append(g)
    seen_reasoning: set[str] = set()
    answers: dict[str, int] = defaultdict(int)
    kept = 0
    # Diversity: first pass takes one per distinct final answer, second pass fills up.
    for rnd in (0, 1):
        for g in passed:
            if g.kept is not None:
                continue
            sig = _reasoning_signature(g.sample.response) or " ".join(g.sample.response.split()).lower()
            ans = canonical_answer(extract_final_answer(g.sample.response)[0])
            if sig in seen_reasoning:
                g.kept, g.keep_reason = False, "duplicate reasoning"
                continue
            if rnd == 0 and answers[ans] > 0:
                continue
            if kept >= max_kept:
                g.kept, g.keep_reason = False, f"over max_kept_per_prompt={max_kept}"
                continue
            seen_reasoning.add(sig)
            answers[ans] += 1
            kept += 1
            g.kept, g.keep_reason = True, f"score {g.grade.score:g} >= {threshold:g}"
    return group


def build_dpo_pairs(group: list[GradedSample], messages: list[dict], min_gap: float, max_pairs: int) -> list[Pair]:
    """Pair high against low scores of one prompt, each response used at most once."""
    graded = [g for g in group if g.grade.score is not None]
    hi = sorted(graded, key=lambda g: (-g.grade.score, g.sample.sample_index))
    lo = sorted(graded, key=lambda g: (g.grade.score, g.sample.sample_index))
    used: set[str] = set()
    pairs: list[Pair] = []
    for c in hi:
        if len(pairs) >= max_pairs:
            break
        if c.key in used or c.sample.finish_reason == "length" or c.grade.rule_verdict == "incorrect":
            continue
        for r in lo:
            if r.key in used or r.key == c.key:
                continue
            gap = c.grade.score - r.grade.score
            if gap < min_gap or gap <= 0:
                break  # lo is ascending: no later r has a larger gap; equal scores are no preference
            if r.sample.response.strip() == c.sample.response.strip():
                continue
            used.update((c.key, r.key))
            pairs.append(Pair(c.sample.problem, messages, c.sample.response, r.sample.response,
                              c.grade.score, r.grade.score, c.key, r.key))
            break
    return pairs


# ------------------------------------------------------------------ buffer group policies
# A group policy turns one prompt's graded samples into (annotated samples, deliverables).
# They are bound with functools.partial and shipped to the buffer actor.


def rft_policy(group: list[GradedSample], *, threshold: float, max_kept: int, system_prompt: str):
    select_for_rft(group, threshold, max_kept)
    kept = [SFTExample(g.key, solver_messages(g.sample.problem, system_prompt), g.sample.response)
            for g in group if g.kept]
    return group, kept


def dpo_policy(group: list[GradedSample], *, min_gap: float, max_pairs: int, system_prompt: str):
    pairs = build_dpo_pairs(group, solver_messages(group[0].sample.problem, system_prompt), min_gap, max_pairs)
    used = {k for p in pairs for k in (p.chosen_key, p.rejected_key)}
    for g in group:
        g.kept = g.key in used
        g.keep_reason = "in a DPO pair" if g.kept else (
            "ungraded" if g.grade.score is None else f"no partner with score gap >= {min_gap:g}")
    return group, pairs


def critique_policy(group: list[GradedSample], *, heldout: frozenset[str], max_wrong: int | None = None,
                    hard_negatives: bool = True, balance: bool = False, counterfactual: bool = False,
                    keep_threshold: float = 7.0, calculator: bool = False):
    """Critic bootstrap: turn sampled responses into critique targets with truthful bands.

    Each target's score and analysis come from `grade_work` on the very text the judge
    reads (the rule verdict for the final answer, the step checker for the work). Held-out
    prompts produce no training data; they measure the trained critic.
    """
    out = []
    wrong = 0
    problem = group[0].sample.problem
    for g in group:
        if problem.id in heldout:
            g.kept, g.keep_reason = False, "held out for critic evaluation"
            continue
        wg = grade_work(problem, g.sample.response, g.grade.verdict)
        if wg is None:
            g.kept, g.keep_reason = False, f"rule grader undecided: {g.grade.reason}"
            continue
        if wg.score < keep_threshold and max_wrong is not None and wrong >= max_wrong:
            g.kept, g.keep_reason = False, f"over critic.max_wrong_per_prompt={max_wrong}"
            continue
        wrong += wg.score < keep_threshold
        out.append(critique_target(f"critique:{g.key}", problem, g.sample.response, wg, calculator))
        g.kept, g.keep_reason = True, f"critique target, band {wg.score} ({wg.band})"
        if counterfactual:
            out += _swapped_target(g, calculator)
        if hard_negatives and wg.score >= keep_threshold:
            out += _flawed_target(f"critique:{g.key}#flawed", problem, g.sample.response, calculator)
    if problem.id not in heldout:
        out += reference_targets(problem, hard_negatives, calculator)
        if balance:
            out += _balancing_repeats(out, problem, keep_threshold)
    return group, out


def critique_target(key: str, problem: Problem, response: str, wg: WorkGrade, calculator: bool = False) -> SFTExample:
    return SFTExample(key, judge_messages(problem, response, calculator), wg.critique)


def reference_targets(problem: Problem, hard_negatives: bool, calculator: bool = False) -> list[SFTExample]:
    """The reference (fully right), its steps in other words (fully right, so that "looks like
    the reference" is not the rule), and as hard negatives its copies changed in one way each:
    a false step with the answer kept (5), a slip carried to the answer (4), a wrong final
    answer after right steps (3). Without them the judge learns that tidy work is right."""
    texts = [("ref", problem.reference, "correct")]
    if hard_negatives:
        salt = salt_of(problem.id)
        reworded = reworded_solution(problem)
        texts += [("reworded", reworded, "correct"),  # right work that is not the reference
                  ("flawed-ref", flawed_copy(problem.reference, salt), "correct"),
                  ("flawed-reworded", reworded and flawed_copy(reworded, salt_of(problem.id, "reworded")), "correct"),
                  ("slip-ref", slip_copy(problem.reference, salt), "incorrect"),
                  ("wrong-ref", wrong_final_answer(problem.reference, problem.answer, salt), "incorrect")]
    return [x for name, text, verdict in texts
            for x in _labelled_target(f"critique:{problem.id}#{name}", problem, text, verdict, calculator)]


def _labelled_target(key: str, problem: Problem, text: str | None, verdict: str, calculator: bool) -> list[SFTExample]:
    """A changed or written text labelled afresh by `grade_work`; nothing when there is no text
    or its band cannot be decided."""
    wg = grade_work(problem, text, verdict) if text else None
    return [] if wg is None else [critique_target(key, problem, text, wg, calculator)]


def _flawed_target(key: str, problem: Problem, text: str, calculator: bool) -> list[SFTExample]:
    """A right response with one intermediate result made false, the answer kept (band 5). Right
    work vastly outnumbers it otherwise, and with the calculator's "match" in the prompt a 135M
    judge scored such copies 10 (flawed-work detection 0.08 on the probe, 21 band-5 targets of 234)."""
    return _labelled_target(key, problem, flawed_copy(text, salt_of(key)), "correct", calculator)


def _swapped_target(g: GradedSample, calculator: bool = False) -> list[SFTExample]:
    """The same response with its final answer flipped (core.critique_data.answer_swapped),
    labelled afresh: a wrong response given the right answer keeps its wrong work (5-6)."""
    right = g.grade.verdict == "correct"
    swapped = answer_swapped(g.sample.response, g.sample.problem, right, salt_of(g.key))
    if swapped is None:
        return []
    return _labelled_target(f"critique:{g.key}#cf", g.sample.problem, *swapped, calculator)


def _balancing_repeats(out: list[SFTExample], problem: Problem, keep_threshold: float) -> list[SFTExample]:
    """Repeat the reference target until passing and failing targets are equal in number:
    with ~80% failing targets the judge learned to call everything wrong."""
    ref = next((x for x in out if x.key.endswith("#ref")), None)
    passing = sum(_target_score(x) >= keep_threshold for x in out)
    if ref is None:
        return []
    return [SFTExample(f"{ref.key}-{i}", ref.messages, ref.response) for i in range(1, len(out) - 2 * passing + 1)]


def _target_score(x: SFTExample) -> float:
    g = parse_judge_output(x.response)
    return g.score or 0.0
