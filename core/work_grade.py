"""Truthful critique labels: a score on the paper's bands for the work, not only the answer.

The final answer's verdict comes from the rule checker (math-verify); the work comes from
the arithmetic statements (core.step_check) against the problem's quantities and the
reference's steps. The analysis names the first wrong step where there is one, and every
sentence of it is true of the response it describes. Bands:

  10  right answer, every step true and on the problem's quantities
   9  right answer, no steps shown
   6  right answer, but a step works on a number from nowhere (wrong operation)
   5  right answer, but a false statement on the way
   4  wrong answer after the reference's set-up, with one false step (a slip)
   3  wrong answer although every step is true and follows the reference (a copying slip)
   2  wrong answer
   1  no final answer
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from core.answers import extract_final_answer
from core.records import Problem
from core.step_check import Statement, find_statements, question_numbers

MAX_QUOTED_CHARS = 60  # a quoted step longer than this is cut: the judge writes every character


@dataclass(frozen=True)
class WorkGrade:
    score: int
    band: str
    analysis: str

    @property
    def critique(self) -> str:
        """The judge's training target: the analysis, then the fixed score line."""
        return f"{self.analysis}\nScore: {self.score}"


def fmt(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    return f"{float(x):.4f}".rstrip("0").rstrip(".")


def quote(s: Statement) -> str:
    t = " ".join(s.text.split())
    return t if len(t) <= MAX_QUOTED_CHARS else "..." + t[-MAX_QUOTED_CHARS:]


def lhs(s: Statement) -> str:
    return quote(s).rsplit("=", 1)[0].strip()


def reference_statements(problem: Problem) -> list[Statement]:
    return find_statements(problem.steps or problem.reference)


def foreign_operand(stmts: list[Statement], problem: Problem, ref: list[Statement]) -> tuple[Statement, Fraction] | None:
    """The first step that works on a number neither given, used by the reference (the 2 of
    "half as many"), nor computed before it."""
    known = question_numbers(problem.question) | {s.claimed for s in ref} | {x for s in ref for x in s.operands}
    for s in stmts:
        for x in s.operands:
            if x not in known:
                return s, x
        known.add(s.claimed)
    return None


def follows_reference(stmts: list[Statement], ref: list[Statement]) -> bool:
    """Each reference step is done by the response, with its own earlier results
    standing in for the reference's (a slip carried forward still follows the plan)."""
    if not ref or not stmts:
        return False
    ref_results = {s.claimed for s in ref}
    own_results = {s.claimed for s in stmts}
    for r in ref:
        if not any(_same_step(r, s, ref_results, own_results) for s in stmts):
            return False
    return True


def _same_step(r: Statement, s: Statement, ref_results: set, own_results: set) -> bool:
    if r.ops != s.ops or len(r.operands) != len(s.operands):
        return False
    pairs = zip(sorted(r.operands), sorted(s.operands)) if r.shape[1] != r.operands else zip(r.operands, s.operands)
    return all(a == b or (a in ref_results and b in own_results) for a, b in pairs)


def grade_work(problem: Problem, response: str, answer_verdict: str) -> WorkGrade | None:
    """The true band of a response; None when the final answer's verdict is unknown."""
    final, _ = extract_final_answer(response)
    if not final:
        return WorkGrade(1, "no answer", f"No final answer; reference {problem.answer}.")
    if answer_verdict not in ("correct", "incorrect"):
        return None
    stmts = find_statements(response)
    ref = reference_statements(problem)
    false = next((s for s in stmts if not s.true), None)
    match = "match" if answer_verdict == "correct" else "differ"
    work = steps_text(stmts, ref)
    tail = f"Final answer {final}; reference {problem.answer}; they {match}."
    if answer_verdict == "correct":
        return _right_answer(stmts, false, foreign_operand(stmts, problem, ref), work, tail)
    return _wrong_answer(stmts, false, ref, work, tail)


def steps_text(stmts: list[Statement], ref: list[Statement], most: int = 3) -> str:
    """The response's steps up to its first wrong one (at most `most`), each beside the
    reference's step with the same operation where there is one: copying both results out
    before the verdict lets a small judge compare two numbers instead of doing arithmetic."""
    if not stmts:
        return "No steps shown."
    lines = []
    for s in stmts[:most]:
        r = matching_reference_step(s, ref)
        v = s.value
        verdict = "right" if s.true else f"wrong, {lhs(s)} is {fmt(v) if v is not None else 'undefined'}"
        lines.append(f"Step {quote(s)}; {f'reference {quote(r)}' if r else 'not in the reference'}; {verdict}.")
        if not s.true:
            break
    return " ".join(lines)


def matching_reference_step(s: Statement, ref: list[Statement]) -> Statement | None:
    ref_results = {r.claimed for r in ref}
    return next((r for r in ref if _same_step(r, s, ref_results, ref_results | {s.claimed} | set(s.operands))),
                None)


def _right_answer(stmts, false, foreign, work: str, tail: str) -> WorkGrade:
    if false is not None:
        return WorkGrade(5, "right answer, false step", f"{work} {tail} The work does not support the answer.")
    if foreign is not None:
        s, x = foreign
        return WorkGrade(6, "right answer, wrong operation", f"{work} It uses {fmt(x)}, which is not in the "
                                                              f"question. {tail}")
    if not stmts:
        return WorkGrade(9, "right answer, no steps", f"{work} {tail}")
    return WorkGrade(10, "fully right", f"{work} {tail}")


def _wrong_answer(stmts, false, ref, work: str, tail: str) -> WorkGrade:
    on_plan = follows_reference(stmts, ref)
    n_false = sum(not s.true for s in stmts)
    if on_plan and n_false == 1:
        return WorkGrade(4, "slip", f"{work} {tail} One slip after the reference's set-up.")
    if on_plan and n_false == 0:
        return WorkGrade(3, "copying slip", f"{work} {tail} The answer does not follow the steps.")
    return WorkGrade(2, "wrong", f"{work} {tail}")
