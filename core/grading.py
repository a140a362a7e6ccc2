"""Pure decisions on records: judge parsing, grade combination, RFT keep, DPO pairing.

No Ray in here. Actors call these; tests exercise them exhaustively.
"""

from __future__ import annotations

import re
from collections import defaultdict

from core.answers import AnswerCheck, extract_final_answer
from core.records import Grade, GradedSample, Pair

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
            ans = extract_final_answer(g.sample.response)[0]
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
        if c.key in used or c.sample.finish_reason == "length":
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
    from core.prompts import solver_messages
    from core.records import SFTExample

    select_for_rft(group, threshold, max_kept)
    kept = [SFTExample(g.key, solver_messages(g.sample.problem, system_prompt), g.sample.response)
            for g in group if g.kept]
    return group, kept


def dpo_policy(group: list[GradedSample], *, min_gap: float, max_pairs: int, system_prompt: str):
    from core.prompts import solver_messages

    pairs = build_dpo_pairs(group, solver_messages(group[0].sample.problem, system_prompt), min_gap, max_pairs)
    used = {k for p in pairs for k in (p.chosen_key, p.rejected_key)}
    for g in group:
        g.kept = g.key in used
        g.keep_reason = "in a DPO pair" if g.kept else (
            "ungraded" if g.grade.score is None else f"no partner with score gap >= {min_gap:g}")
    return group, pairs


def critique_policy(group: list[GradedSample], *, heldout: frozenset[str], max_wrong: int | None = None,
                    hard_negatives: bool = True, balance: bool = False, counterfactual: bool = False):
    """Critic bootstrap: turn rule-labelled samples into critique targets.

    Held-out prompts produce no training data; they are kept in the lineage for
    measuring the trained critic's accuracy.
    """
    from core.answers import extract_final_answer
    from core.prompts import critique_text, judge_messages, wrong_final_answer
    from core.records import SFTExample

    out = []
    wrong = 0
    problem = group[0].sample.problem
    for g in group:
        if problem.id in heldout:
            g.kept, g.keep_reason = False, "held out for critic evaluation"
            continue
        if g.grade.verdict == "unknown" and extract_final_answer(g.sample.response)[0]:
            g.kept, g.keep_reason = False, f"rule grader undecided: {g.grade.reason}"
            continue
        extracted = extract_final_answer(g.sample.response)[0]
        right = g.grade.verdict == "correct"
        if not right and max_wrong is not None and wrong >= max_wrong:
            g.kept, g.keep_reason = False, f"over critic.max_wrong_per_prompt={max_wrong}"
            continue
        wrong += not right
        text = critique_text(extracted, problem.answer, right)
        out.append(SFTExample(f"critique:{g.key}", judge_messages(problem, g.sample.response), text))
        g.kept, g.keep_reason = True, "critique target"
        if counterfactual and extracted:
            out.extend(_counterfactual_critique(g, extracted, right))
    if problem.id not in heldout:
        # The reference solution itself is a fully right response: it balances the
        # classes when the base model is mostly wrong.
        ref = SFTExample(f"critique:{problem.id}#ref", judge_messages(problem, problem.reference),
                         critique_text(problem.answer, problem.answer, True))
        out.append(ref)
        wrong_ref = wrong_final_answer(problem.reference, problem.answer, problem.id) if hard_negatives else None
        if wrong_ref:
            out.append(SFTExample(f"critique:{problem.id}#wrong-ref", judge_messages(problem, wrong_ref),
                                  critique_text(extract_final_answer(wrong_ref)[0], problem.answer, False)))
        if balance:
            # Repeat the reference until right and wrong targets are equal in number: with
            # ~80% wrong targets the judge learned to call everything wrong (docs/cpu-demo-report.md).
            n_right = sum(x.response.endswith("Score: 9") for x in out)
            out += [SFTExample(f"{ref.key}-{i}", ref.messages, ref.response)
                    for i in range(1, len(out) - 2 * n_right + 1)]
    return group, out


def _counterfactual_critique(g: GradedSample, extracted: str, right: bool) -> list:
    """The same response with its final answer changed so that the verdict flips.

    A wrong response gets the reference answer everywhere its own stood (now right); a
    right one gets a nearby wrong number as its last answer only (now wrong, though the
    reference's number still appears in its work). The reference stays the true one, so
    labels stay truthful, and the only thing that tells the pair apart is the final answer
    against the reference. Without this the 135M judge learned the class prior. Shortcuts
    it took from looser versions (docs/cpu-demo-report.md): "a reference that fits the
    question means they differ" when the reference was changed instead, and "the
    reference's number appears somewhere, so they match" when every occurrence was changed.
    """
    from core.answers import extract_final_answer
    from core.prompts import critique_text, judge_messages, replace_final_answer, shifted_integer
    from core.records import SFTExample

    problem = g.sample.problem
    new = shifted_integer(extracted, g.key) if right else problem.answer.strip()
    if not new or new == extracted:  # the rule grader disagreed with plain extraction: no clean flip
        return []
    text = replace_final_answer(g.sample.response, extracted, new, last_only=right)
    if not text or extract_final_answer(text)[0] != new:
        return []
    return [SFTExample(f"critique:{g.key}#cf", judge_messages(problem, text),
                       critique_text(new, problem.answer, not right))]
