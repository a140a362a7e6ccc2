"""Chat messages for the solver and the Math-Critique judge, and the judge's output form.

The judge writes a short analysis and then one line `Score: N` (N in 1..10). That
fixed last line is what `parse_judge_output` looks for; anything else is ungraded.
"""

from __future__ import annotations

from core.answers import canonical_answer, extract_final_answer
from core.records import Problem
from core.step_check import find_statements

JUDGE_SYSTEM = (
    "You are Math-Critique. Check each step of the response against the reference solution, "
    "compare the final answers, then end with 'Score: N' (1-2 wrong, 3-5 flawed, 6-8 right with "
    "issues, 9-10 fully right)."
)  # short on purpose: every judge training example carries it, and CPU training time is per token
MAX_JUDGED_RESPONSE_CHARS = 1500  # the judge sees the tail, where the answer is
MAX_REFERENCE_CHARS = 800  # about 200 tokens of the reference solution: its steps, then its answer
MAX_CHECKED_STATEMENTS = 6  # calculator notes: the first few `a op b = c` of the response shown


def solver_messages(problem: Problem, system_prompt: str) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": problem.question}]


def reference_for_judge(problem: Problem) -> str:
    """The reference solution, cut to a budget from its start, with its final answer kept."""
    ref = (problem.reference or "").strip()
    if not ref:
        return problem.answer
    if len(ref) > MAX_REFERENCE_CHARS:
        ref = ref[:MAX_REFERENCE_CHARS] + " ..."
    if problem.answer and problem.answer not in ref[-80:]:
        ref += f"\nThe answer is {problem.answer}."
    return ref


def calculator_notes(response: str, reference_answer: str = "") -> str:
    """Each arithmetic statement of the response (`a op b = c`) marked true or false by exact
    arithmetic (core.step_check), and, where the problem has a reference answer, whether the
    response's final answer equals it: the judge reads both checks instead of doing them (a
    135M judge wrote "Final answer 5; reference 5; they differ" on a third of right answers)."""
    stmts = find_statements(response)[:MAX_CHECKED_STATEMENTS]
    steps = ("Calculator: " + "; ".join(f"{' '.join(st.text.split())} {'true' if st.true else 'FALSE'}"
                                        for st in stmts) + ".") if stmts else "Calculator: no arithmetic statement found."
    return steps + (" " + answer_note(response, reference_answer) if reference_answer else "")


def answer_note(response: str, reference_answer: str) -> str:
    """The response's final answer (the rule check's extraction) against the reference's."""
    final, _ = extract_final_answer(response)
    if not final:
        return "No final answer."
    same = canonical_answer(final) == canonical_answer(reference_answer)
    return f"Answer {' '.join(final.split())} vs reference {reference_answer}: {'match' if same else 'differ'}."


def judge_messages(problem: Problem, response: str, calculator: bool = False) -> list[dict]:
    """The judge's prompt; with `calculator` (critic.calculator_notes) it also carries the
    response's arithmetic checked by exact arithmetic."""
    resp = response if len(response) <= MAX_JUDGED_RESPONSE_CHARS else "..." + response[-MAX_JUDGED_RESPONSE_CHARS:]
    user = (
        f"Question: {problem.question}\n"
        f"Reference solution: {reference_for_judge(problem)}\n"
        f"Response: {resp}"
    )
    if calculator:
        user += "\n" + calculator_notes(resp, problem.answer)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def wrong_final_answer(solution: str, answer: str, salt: str) -> str | None:
    """The solution with its integer final answer (its last occurrence) changed.

    Right work with a wrong final answer: without such hard negatives the judge learns
    that tidy responses (like every reference) are right, or that a response that
    mentions the reference's number is right. None when the answer is not a plain integer.
    """
    wrong = shifted_integer(answer, salt)
    return None if wrong is None else replace_final_answer(solution, answer, wrong, last_only=True)


def replace_final_answer(text: str, old: str, new: str, last_only: bool = False) -> str | None:
    """`text` with the standalone number `old` made `new` (17 and 7.5 stay when 7
    changes): every occurrence, or the last only. None when `old` is not a number or
    never appears."""
    import re

    old = old.strip()
    if not re.fullmatch(r"-?\d+(\.\d+)?", old):
        return None
    hits = list(re.finditer(rf"(?<![\d.]){re.escape(old)}(?!\.?\d)", text))
    if not hits:
        return None
    for m in reversed(hits[-1:] if last_only else hits):
        text = text[:m.start()] + new + text[m.end():]
    return text


def shifted_integer(answer: str, salt: str) -> str | None:
    """A nearby wrong integer (deterministic per salt); None when the answer is not an integer."""
    import hashlib
    import re

    if not re.fullmatch(r"-?\d+", answer.strip()):
        return None
    return str(int(answer) + (1, -1, 2, 10)[hashlib.sha256(salt.encode()).digest()[0] % 4])
