"""Final-answer extraction and the math-verify checker, including adversarial input.

One module-scoped AnswerChecker (5 s per-item deadline) serves the table. The deadline
itself is exercised with inputs that make math-verify hang, and checked by its outcome
(a verdict that says the deadline stopped the check), never by measured seconds: a
loaded 2-core machine makes any timing figure flaky. pytest-timeout catches a real hang.
"""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.answers import MAX_ANSWER_CHARS, MAX_SCAN_CHARS, AnswerChecker, cut_off_unanswered, extract_final_answer, looping

MB = 1_000_000

# 15 nested \frac{1}{...} around 2 (fits in MAX_ANSWER_CHARS) is 1/2; 5000 of them do not fit.
FRAC15 = "\\frac{1}{" * 15 + "2" + "}" * 15
FRAC5000 = "\\frac{1}{" * 5000 + "2" + "}" * 5000
PMATRIX = "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}"  # a long (> 40 chars) final answer


@pytest.fixture(scope="module")
def checker():
    c = AnswerChecker(timeout_s=5)
    yield c
    c.close()


C, I, U = "correct", "incorrect", "unparseable"
NOT_CORRECT = {I, U}

# (response, gold answer, expected verdict or set of acceptable verdicts)
CHECK_CASES = [
    # plain forms of the same answer
    pytest.param("The answer is 12.", "12", C, id="answer-is"),
    pytest.param("The answer is: 42", "42", C, id="answer-is-colon"),
    pytest.param("Answer: 42", "42", C, id="answer-colon"),
    pytest.param("Janet makes 9 * 2 = 18 dollars.\n#### 18", "18", C, id="hash-after-work"),
    pytest.param("#### 1,500", "1500", C, id="hash-thousands"),
    pytest.param("\\boxed{42}", "42", C, id="boxed"),
    pytest.param("\\fbox{12}", "12", C, id="fbox"),
    pytest.param("Hence \\boxed{12}.", "12", C, id="boxed-then-period"),
    pytest.param("x = 5, so y = 7", "7", C, id="last-number"),
    pytest.param("The answer is 7.5.", "7.5", C, id="decimal"),
    pytest.param("so 3 < 4 and the answer is 4", "4", C, id="comparison-before-answer"),
    # several answers: the last one counts
    pytest.param("First \\boxed{1}, no wait: \\boxed{2}", "2", C, id="last-boxed-wins"),
    pytest.param("First \\boxed{1}, no wait: \\boxed{2}", "1", I, id="earlier-boxed-ignored"),
    pytest.param("#### 3\nActually \\boxed{4}", "4", C, id="boxed-over-hash"),
    pytest.param("The answer is 3.\n#### 4", "4", C, id="hash-over-answer-is"),
    pytest.param("The answer is 3. Then the answer is 5.", "5", C, id="last-answer-is"),
    # fractions vs decimals
    pytest.param("So \\boxed{\\frac{1}{2}}", "0.5", C, id="latex-frac-vs-decimal"),
    pytest.param("The answer is 1/2.", "0.5", C, id="slash-frac-vs-decimal"),
    pytest.param("The answer is 0.5", "\\frac{1}{2}", C, id="decimal-vs-latex-frac"),
    pytest.param("The answer is 0.50.", "1/2", C, id="trailing-zero-decimal"),
    pytest.param("The answer is 2/4", "0.5", C, id="unreduced-frac"),
    pytest.param("The answer is \\frac{1}{2}", "\\frac{2}{4}", C, id="equal-latex-fracs"),
    pytest.param("\\boxed{\\dfrac{1}{2}}", "\\frac12", C, id="dfrac-vs-frac12"),
    pytest.param("The final answer is $\\frac{3}{4}$.", "3/4", C, id="dollar-delimited-frac"),
    pytest.param("The answer is \\[\\frac{3}{4}\\]", "0.75", C, id="display-math-frac"),
    pytest.param("The answer is 100.", "100.0", C, id="int-vs-float"),
    pytest.param("The answer is 1/3.", "0.5", I, id="wrong-fraction"),
    # thousands separators
    pytest.param("The answer is 1,000.", "1000", C, id="thousands-in-response"),
    pytest.param("The answer is 1000", "1,000", C, id="thousands-in-gold"),
    pytest.param("The answer is 1,234,567.", "1234567", C, id="millions"),
    pytest.param("The values are 1,2,3", "3", C, id="comma-list-last-number"),
    pytest.param("The answer is 1,000.", "100", I, id="thousands-wrong"),
    # units and currency
    pytest.param("The answer is 12 dollars.", "12", C, id="unit-dollars"),
    pytest.param("The answer is 1,000 dollars.", "1000", C, id="unit-thousands-dollars"),
    pytest.param("It costs $12.", "12", C, id="dollar-sign-last-number"),
    pytest.param("The answer is $12.", "12", C, id="dollar-sign-answer-is"),
    pytest.param("The answer is \\$12.", "12", C, id="escaped-dollar"),
    pytest.param("\\boxed{\\$12}", "12", C, id="boxed-escaped-dollar"),
    pytest.param("The answer is 12 cm.", "12", C, id="unit-cm"),
    pytest.param("\\boxed{12\\text{ cm}}", "12", C, id="unit-text-cm"),
    pytest.param("The answer is 12 marbles.", "12", C, id="unit-marbles"),
    pytest.param("The answer is 12 dollars.", "13", I, id="unit-wrong-number"),
    pytest.param("The answer is 5 pi", "5", NOT_CORRECT, id="pi-is-not-a-unit"),
    pytest.param("The answer is 2 million dollars.", "2", NOT_CORRECT, id="million-is-not-a-unit"),
    pytest.param("The answer is 5 factorial", "5", NOT_CORRECT, id="factorial-is-not-a-unit"),
    pytest.param("The answer is 2x", "2", NOT_CORRECT, id="variable-is-not-a-unit"),
    # signs
    pytest.param("The answer is -3.", "-3", C, id="negative"),
    pytest.param("The answer is -3.", "3", I, id="negative-vs-positive"),
    pytest.param("The answer is 3.", "-3", I, id="positive-vs-negative"),
    pytest.param("\\boxed{-\\frac{1}{2}}", "-0.5", C, id="negative-frac"),
    pytest.param("The answer is -0.5", "\\frac{1}{2}", I, id="negative-decimal-vs-frac"),
    pytest.param("The answer is \u22125.", "-5", C, id="unicode-minus"),
    # percentages
    pytest.param("The answer is 50%.", "50", C, id="percent"),
    pytest.param("The answer is 50 percent.", "50%", C, id="percent-word"),
    pytest.param("\\boxed{10\\%}", "10", C, id="latex-percent"),
    # LaTeX \text{} and other LaTeX answers
    pytest.param("\\boxed{\\text{12}}", "12", C, id="text-number"),
    pytest.param("\\boxed{\\text{Monday}}", "\\text{Monday}", C, id="text-word"),
    pytest.param("\\boxed{\\text{Tuesday}}", "\\text{Monday}", NOT_CORRECT, id="text-word-wrong"),
    pytest.param("The answer is \\(\\sqrt{2}\\).", "\\sqrt{2}", C, id="inline-math-sqrt"),
    pytest.param("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", C, id="sqrt-simplified"),
    pytest.param("\\boxed{x=3}", "3", C, id="equation-answer"),
    pytest.param("The answer is $x^2+2x+1$", "(x+1)^2", C, id="expanded-polynomial"),
    pytest.param("\\boxed{(1, 2)}", "(1,2)", C, id="tuple"),
    pytest.param("\\boxed{\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}}", PMATRIX, C, id="long-gold-matrix"),
    pytest.param("The answer is 5.", PMATRIX, I, id="long-gold-matrix-vs-number"),
    pytest.param("\\boxed{" + FRAC15 + "}", "1/2", C, id="nested-frac-15"),
    pytest.param("\\boxed{{{{{{{{{{{{{{{{{{{{{7}}}}}}}}}}}}}}}}}}}}}", "7", C, id="redundant-braces"),
    pytest.param("The answer is **12**.", "12", C, id="markdown-bold"),
    # gold given as a worked solution
    pytest.param("The answer is 4.", "Subtract 3 to get $2x = 8$, so $x = \\boxed{4}$.", C, id="gold-solution-boxed"),
    pytest.param("18", "She makes 9 * 2 = $18.\n#### 18", C, id="gold-solution-hash"),
    pytest.param("The answer is 5.", "The answer is 6", I, id="gold-answer-is"),
    # unicode digits and text
    pytest.param("The answer is \u0661\u0662.", "12", C, id="arabic-indic-digits"),
    pytest.param("\u7b54\u6848\u662f\uff1a\uff11\uff12", "12", C, id="fullwidth-digits-chinese"),
    pytest.param("\U0001f389 The answer is 8 \U0001f389", "8", C, id="emoji"),
    pytest.param("The answer is \u5341\u4e8c.", "12", NOT_CORRECT, id="chinese-numeral-text"),
    pytest.param("The answer is twelve.", "12", NOT_CORRECT, id="number-word"),
    # wrong answers
    pytest.param("The answer is 13.", "12", I, id="wrong-int"),
    pytest.param("\\boxed{7}", "12", I, id="wrong-boxed"),
    pytest.param("The answer is 5.", 0, I, id="gold-int-zero-wrong"),
    pytest.param("The answer is 0.", 0, C, id="gold-int-zero-right"),
    pytest.param("The answer is 5.", "2+3", C, id="gold-expression"),
    # untrusted text is never executed
    pytest.param("The answer is $\\input{/etc/passwd}$", "0", NOT_CORRECT, id="latex-input"),
    # empty / missing input
    pytest.param("", "12", U, id="empty"),
    pytest.param("   \n\t  ", "12", U, id="whitespace"),
    pytest.param(None, "12", U, id="none-response"),
    pytest.param("I am not sure how to solve this.", "12", U, id="no-answer"),
    pytest.param("\\boxed{}", "1", U, id="empty-boxed"),
    pytest.param("The answer is 12.", "", U, id="empty-gold"),
    pytest.param("The answer is 12.", "   ", U, id="whitespace-gold"),
    pytest.param("The answer is 12.", None, U, id="none-gold"),
    pytest.param("\\boxed{{}}", "{}", U, id="empty-after-normalising"),
    # adversarial sizes and nesting
    pytest.param("a" * (5 * MB) + " The answer is 7.", "7", C, id="5MB-prefix"),
    pytest.param("Let me think. " * 400_000 + "\\boxed{42}", "42", C, id="5MB-then-boxed"),
    pytest.param("The answer is 12." + "\n" * 100_000, "12", C, id="long-trailing-whitespace"),
    pytest.param("1" * (5 * MB), "1", U, id="5MB-digits"),
    pytest.param("\\boxed{" + "9" * (MAX_ANSWER_CHARS + 100) + "}", "9", U, id="overlong-boxed"),
    pytest.param("\\boxed{" + FRAC5000 + "}", "1/2", U, id="5000-nested-frac"),
    pytest.param("{" * 5000 + "}" * 5000 + "\nThe answer is 3.", "3", C, id="5000-braces-then-answer"),
    pytest.param("\\boxed{" * 3000, "1", U, id="3000-unclosed-boxed"),
    pytest.param("\\boxed{1} " * 100_000 + "\\boxed{2}", "2", C, id="100k-boxed"),
    pytest.param("(" * 5000 + "The answer is 6." + ")" * 5000, "6", U, id="5000-parens-tail"),
]


@pytest.mark.parametrize("response,gold,expected", CHECK_CASES)
def test_check(checker, response, gold, expected):
    res = checker.check(response, gold)
    allowed = expected if isinstance(expected, set) else {expected}
    assert res.verdict in allowed, res
    assert res.reason  # every verdict says why
    if res.verdict != U:
        assert res.extracted  # a verdict on an answer names the answer it judged
        assert len(res.extracted) <= MAX_ANSWER_CHARS


# (text, expected answer, expected rule) ; rule None = only the answer is checked
EXTRACT_CASES = [
    pytest.param("\\boxed{5}", "5", "boxed", id="boxed"),
    pytest.param("\\boxed{1} and then \\boxed{2}", "2", "boxed", id="last-boxed"),
    pytest.param("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", "boxed", id="boxed-nested-braces"),
    pytest.param("\\fbox{3}", "3", "boxed", id="fbox"),
    pytest.param("\\boxed {  8 }", "8", "boxed", id="boxed-spaces"),
    pytest.param("\\boxed{2} and an unclosed \\boxed{3", "2", "boxed", id="unclosed-after-closed"),
    pytest.param("#### 72", "72", "####", id="hash"),
    pytest.param("#### 1\n#### 2", "2", "####", id="last-hash"),
    pytest.param("The answer is 12.", "12", "answer-is", id="answer-is"),
    pytest.param("the answer is: 7", "7", "answer-is", id="answer-is-colon"),
    pytest.param("The final answer is $\\frac{3}{4}$.", "\\frac{3}{4}", "answer-is", id="answer-is-dollar-latex"),
    pytest.param("The answer is \\(x+1\\).", "x+1", "answer-is", id="answer-is-inline-math"),
    pytest.param("The answer is $$\\sqrt{3}$$", "\\sqrt{3}", "answer-is", id="answer-is-display-dollars"),
    pytest.param("I think 3 then 4", "4", "last-number", id="last-number"),
    pytest.param("It drops to -2.5 now", "-2.5", "last-number", id="last-negative-decimal"),
    pytest.param("About 1,000 people came", "1,000", "last-number", id="last-thousands"),
    pytest.param("values 1,2,3", "3", "last-number", id="comma-list"),
    pytest.param("ratio 3/4 overall", "3/4", "last-number", id="last-fraction"),
    pytest.param("\u7b54\u6848\u662f\uff1a\uff11\uff12", "\uff11\uff12", "last-number", id="fullwidth-last-number"),
    pytest.param("a" * (5 * MB) + "The answer is 9.", "9", "answer-is", id="5MB"),
    pytest.param("The answer is 12." + " " * (2 * MAX_SCAN_CHARS), "12", "answer-is", id="trailing-spaces"),
    pytest.param("\\boxed{" + "{" * 10 + "x" + "}" * 10 + "}", "{" * 10 + "x" + "}" * 10, "boxed", id="deep-braces"),
]


@pytest.mark.parametrize("text,answer,how", EXTRACT_CASES)
def test_extract_final_answer(text, answer, how):
    got, got_how = extract_final_answer(text)
    assert (got, got_how) == (answer, how)


@pytest.mark.parametrize(
    "text,reason_part",
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("  \n ", "empty", id="whitespace"),
        pytest.param(None, "empty", id="none"),
        pytest.param(12, "empty", id="not-a-string"),
        pytest.param("no digits here at all", "no answer found", id="no-number"),
        pytest.param("\\boxed{" * 600, "no answer found", id="unclosed-boxed"),
        pytest.param("\\boxed{" + "7" * 500 + "}", "longer than", id="overlong-boxed"),
        pytest.param("7" * (MAX_ANSWER_CHARS + 1), "longer than", id="overlong-number"),
        pytest.param("\\boxed{" + FRAC5000 + "}", "no answer found", id="boxed-beyond-scan-window"),
    ],
)
def test_extract_nothing(text, reason_part):
    got, why = extract_final_answer(text)
    assert got == ""
    assert reason_part in why


def test_model_text_is_never_executed(checker, tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f"The answer is __import__('os').system('touch {marker}')",
        f"\\boxed{{__import__('pathlib').Path('{marker}').touch()}}",
        f"The answer is exec(\"open('{marker}', 'w').close()\")",
    ]
    for p in payloads:
        assert checker.check(p, "0").verdict in NOT_CORRECT
        assert extract_final_answer(p)[0]
    assert not marker.exists()


def test_answer_outside_scan_window_is_not_used():
    # Only the tail is scanned: an early answer followed by a long tail without one is no answer.
    text = "The answer is 5.\n" + "blah " * (MAX_SCAN_CHARS // 4)
    assert extract_final_answer(text) == ("", f"no answer found in the last {MAX_SCAN_CHARS} characters")


def test_unclosed_boxed_in_the_scan_window_is_no_answer():
    # Thousands of unclosed \boxed{ fill the scan window (brace pairing is one pass, not quadratic).
    for _ in range(20):
        assert extract_final_answer("\\boxed{" * (MAX_SCAN_CHARS // 7))[0] == ""


@pytest.mark.parametrize("text,finish,cut", [
    pytest.param("3 + 4 = 7, then 7 * 2 = 14", "length", True, id="cut-off-last-number"),
    pytest.param("no number yet", "length", True, id="cut-off-nothing"),
    pytest.param("The answer is 14. Also", "length", False, id="cut-off-after-answer-is"),
    pytest.param("So \\boxed{14} and", "length", False, id="cut-off-after-boxed"),
    pytest.param("#### 14\nand", "length", False, id="cut-off-after-hash"),
    pytest.param("3 + 4 = 7, then 7 * 2 = 14", "stop", False, id="finished-last-number"),
    pytest.param("3 + 4 = 7, then 7 * 2 = 14", "", False, id="finish-unknown"),
])
def test_cut_off_unanswered(text, finish, cut):
    """A response the budget stopped before it stated an answer: its last number is no answer."""
    assert cut_off_unanswered(text, finish) is cut


@pytest.mark.parametrize("text,loops", [
    pytest.param("Then 5 + 3 = 8. " * 10, True, id="sentence-loop"),
    pytest.param("So the total is " + "1, 2, " * 40 + "1, 2", True, id="loop-cut-mid-unit"),
    pytest.param("!" * 80, True, id="one-character-loop"),
    pytest.param("Then 5 + 3 = 8. " * 2, False, id="two-repeats-short"),
    pytest.param("The total is 5000000", False, id="zeros-of-a-number"),
    pytest.param("First 3 + 4 = 7. Next 7 * 2 = 14. Then 14 - 1 = 13. Finally 13 + 6 = 19. So we", False, id="progress"),
    pytest.param(" " * 100, False, id="only-spaces"),
])
def test_looping(text, loops):
    assert looping(text) is loops


# ------------------------------------------------------------------ the deadline


def _worker_pid(c: AnswerChecker) -> int | None:
    return c._proc.pid if c._proc is not None and c._proc.is_alive() else None


@pytest.mark.parametrize(
    "hang",
    [
        pytest.param("\\boxed{9^{9^{9^{9}}}}", id="power-tower"),
        pytest.param("The answer is (10^{10})!", id="huge-factorial"),
        pytest.param("\\boxed{" + "\\{" * 20 + "1" + "\\}" * 20 + "}", id="deeply-nested-sets"),
    ],
)
def test_deadline_stops_a_hanging_check_and_the_checker_recovers(hang):
    c = AnswerChecker(timeout_s=2)
    try:
        warm = c.check("\\boxed{\\frac{1}{2}}", "0.5")  # starts the worker (imports are not timed)
        assert warm.verdict == C and "math-verify" in warm.reason
        first_pid = _worker_pid(c)
        res = c.check(hang, "1")
        assert res.verdict == U, res
        assert "deadline of 2" in res.reason, res  # stopped by our deadline, not by finishing
        assert first_pid is not None and _worker_pid(c) is None  # the hung worker was killed
        # and the checker works afterwards, on a fresh worker
        after = c.check("The answer is 0.5", "\\frac{1}{2}")
        assert after.verdict == C and "math-verify" in after.reason, after
        assert _worker_pid(c) not in (None, first_pid)
        assert c.check("\\boxed{3}", "\\frac{9}{2}").verdict == I
    finally:
        c.close()


def test_worker_killed_mid_check_is_reported_not_raised():
    """A worker that dies (OOM killer, crash) during an item: no exception, no waiting for the deadline."""
    c = AnswerChecker(timeout_s=60)
    try:
        assert c.check("\\boxed{\\frac{1}{2}}", "0.5").verdict == C
        pid = _worker_pid(c)
        killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))
        killer.start()
        res = c.check("\\boxed{9^{9^{9^{9}}}}", "1")
        killer.join()
        assert res.verdict == U and "died" in res.reason, res  # not "deadline": it did not wait for it
        assert c.check("The answer is 1/2", "0.5").verdict == C
    finally:
        c.close()


def test_worker_gone_between_checks_is_restarted():
    c = AnswerChecker(timeout_s=5)
    try:
        assert c.check("\\boxed{\\frac{1}{2}}", "0.5").verdict == C
        pid = _worker_pid(c)
        os.kill(pid, signal.SIGKILL)
        c._proc.join(5)
        res = c.check("\\boxed{\\frac{2}{4}}", "0.5")
        assert res.verdict == C, res
        assert _worker_pid(c) not in (None, pid)
    finally:
        c.close()


def test_exact_matches_do_not_start_a_worker():
    c = AnswerChecker(timeout_s=5)
    try:
        assert c.check("The answer is 1,000.", "1000").verdict == C
        assert c.check("#### 18", "18").verdict == C
        assert c._proc is None
    finally:
        c.close()


def test_check_from_several_threads(checker):
    cases = [
        ("The answer is 12.", "12", C),
        ("\\boxed{\\frac{1}{2}}", "0.5", C),
        ("The answer is 2/4", "0.5", C),
        ("The answer is 13.", "12", I),
        ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", C),
        ("The answer is -3.", "3", I),
        ("nothing here", "1", U),
        ("The answer is 12 dollars.", "12", C),
    ] * 5
    expected = [v for _, _, v in cases]

    def run(case):
        r, g, _ = case
        return checker.check(r, g).verdict

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(run, cases))
    assert got == expected
