"""Chat messages for the solver and the Math-Critique judge, and the judge's output form.

The judge writes a short analysis and then one line `Score: N` (N in 1..10). That
fixed last line is what `parse_judge_output` looks for; anything else is ungraded.
"""

from __future__ import annotations

from core.records import Problem

JUDGE_SYSTEM = (
    "You are Math-Critique. Compare the response's final answer with the reference "
    "answer, write a one-sentence analysis, then a last line 'Score: N' with N from 1 "
    "to 10 (1-2 wrong, 3-5 flawed, 6-8 right with issues, 9-10 fully right)."
)
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
    """The critique target we train the judge to write (paper's score bands)."""
    if not extracted:
        return f"The response gives no final answer; the reference answer is {reference}.\nScore: 2"
    if correct:
        return f"The response's final answer {extracted} matches the reference answer {reference}.\nScore: 9"
    return f"The response's final answer {extracted} does not match the reference answer {reference}.\nScore: 2"
