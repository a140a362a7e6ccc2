"""Counterfactual responses for the critic: copies of a response changed in one known way.

Each copy's label is computed afresh by `grade_work` from the changed text, so labels stay
true of what the judge reads. The copies fill the bands that a weak base model rarely
samples on its own: right answers reached through a false step (5), slips (4), copying
slips (3), and fully right work in another wording (10).
"""

from __future__ import annotations

import hashlib

from core.answers import extract_final_answer
from core.prompts import replace_final_answer, shifted_integer
from core.records import Problem
from core.step_check import find_statements
from core.work_grade import fmt, reference_statements


def _shift(value: str, salt: str) -> str | None:
    return shifted_integer(value, salt)


def flawed_copy(text: str, salt: str) -> str | None:
    """One intermediate result made false while the final answer stays as it was.

    This is the flawed-work probe: a judge that reads only the final answer scores the
    copy as high as the original.
    """
    final = extract_final_answer(text)[0]
    for s in find_statements(text):
        if not s.true or s.claimed.denominator != 1:
            continue
        new = _shift(str(s.claimed), salt)
        out = text[:s.span[0]] + new + text[s.span[1]:]
        if new and extract_final_answer(out)[0] == final:
            return out
    return None


def slip_copy(text: str, salt: str) -> str | None:
    """The last step's result made false, and the final answer following it (one slip)."""
    final = extract_final_answer(text)[0]
    stmts = [s for s in find_statements(text) if s.true and fmt(s.claimed) == final]
    if not stmts:
        return None
    s = stmts[-1]
    new = _shift(final, salt)
    if not new:
        return None
    out = text[:s.span[0]] + new + text[s.span[1]:]
    out = replace_final_answer(out, final, new, last_only=True)
    return out if out and extract_final_answer(out)[0] == new else None


def reworded_solution(problem: Problem) -> str | None:
    """The reference's steps in another wording: fully right work that is not the reference."""
    steps = reference_statements(problem)
    if not steps or not problem.answer:
        return None
    words = ["First", "Then", "Next", "Finally"]
    lines = [f"{words[min(i, 3)] if len(steps) > 1 else 'We compute'} {' '.join(s.text.split())}."
             for i, s in enumerate(steps)]
    return "\n".join(lines) + f"\nSo the answer is {problem.answer}."


def answer_swapped(text: str, problem: Problem, right: bool, salt: str) -> tuple[str, str] | None:
    """The response with its final answer flipped: a wrong one given the reference's answer,
    a right one a nearby wrong number (last occurrence only). Returns (text, verdict)."""
    extracted = extract_final_answer(text)[0]
    if not extracted:
        return None
    new = _shift(extracted, salt) if right else problem.answer.strip()
    if not new or new == extracted:
        return None
    out = replace_final_answer(text, extracted, new, last_only=right)
    if not out or extract_final_answer(out)[0] != new:
        return None
    return out, "incorrect" if right else "correct"


def salt_of(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
