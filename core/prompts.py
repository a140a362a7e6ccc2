"""Chat messages for the solver and the Math-Critique judge, and the judge's output form.

The judge writes a short analysis and then one line `Score: N` (N in 1..10). That
fixed last line is what `parse_judge_output` looks for; anything else is ungraded.
"""

from __future__ import annotations

from core.records import Problem

JUDGE_SYSTEM = (
    "You are Math-Critique. Compare the response's final answer with the reference answer "
    "in one sentence, then end with 'Score: N' (1-10; 1-2 wrong, 9-10 fully right)."
)  # short on purpose: every judge training example carries it, and CPU training time is per token
MAX_JUDGED_RESPONSE_CHARS = 1500  # the judge sees the tail, where the answer is


def solver_messages(problem: Problem, system_prompt: str) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": problem.question}]


def reference_for_judge(problem: Problem) -> str:
    return problem.answer or problem.reference


def judge_messages(problem: Problem, response: str) -> list[dict]:
    resp = response if len(response) <= MAX_JUDGED_RESPONSE_CHARS else "..." + response[-MAX_JUDGED_RESPONSE_CHARS:]
    user = (
        f"Question: {problem.question}\n"
        f"Reference answer: {reference_for_judge(problem)}\n"
        f"Response: {resp}"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def critique_text(extracted: str, reference: str, correct: bool) -> str:
    """The critique target we train the judge to write (paper's score bands).

    Both answers are written out before the verdict, so the judge decides by comparing
    two numbers it has just copied rather than by how the response looks.
    """
    if not extracted:
        return f"The response gives no final answer. The reference answer is {reference}.\nScore: 2"
    verdict = "They match.\nScore: 9" if correct else "They differ.\nScore: 2"
    return f"The response's final answer is {extracted}. The reference answer is {reference}. {verdict}"


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
