"""The arithmetic-statement checker: forms the model writes, truth, and where the result stands."""

from __future__ import annotations

from fractions import Fraction

import pytest

from core.step_check import evaluate, find_statements, question_numbers

# (text, [(statement text, true)])
CASES = [
    ("12 + 7 = 19", [("12 + 7 = 19", True)]),
    ("12 + 7 = 20", [("12 + 7 = 20", False)]),
    ("46 - 34 = 12", [("46 - 34 = 12", True)]),
    ("46 - 34 = 22", [("46 - 34 = 22", False)]),
    ("6 x 4 = 24", [("6 x 4 = 24", True)]),
    ("6 X 4 = 25", [("6 X 4 = 25", False)]),
    ("6 × 4 = 24", [("6 × 4 = 24", True)]),
    ("6 * 4 = 24", [("6 * 4 = 24", True)]),
    ("6 · 4 = 24", [("6 · 4 = 24", True)]),
    ("40 / 8 = 5", [("40 / 8 = 5", True)]),
    ("40 ÷ 8 = 6", [("40 ÷ 8 = 6", False)]),
    ("48/2=24", [("48/2=24", True)]),
    ("3 \\times 4 = 12", [("3 \\times 4 = 12", True)]),
    ("12 \\div 4 = 3", [("12 \\div 4 = 3", True)]),
    ("2 \\cdot 5 = 11", [("2 \\cdot 5 = 11", False)]),
    # unit words between numbers and operators
    ("12 apples + 7 apples = 19 apples.", [("12 apples + 7 apples = 19", True)]),
    ("He has 12 red apples + 7 = 20", [("12 red apples + 7 = 20", False)]),
    ("$3 x $4 = $12", [("$3 x $4 = $12", True)]),
    ("3 boxes x 4 pens = 12 pens", [("3 boxes x 4 pens = 12", True)]),
    # several operations in one line, usual precedence
    ("3 × 4 + 2 = 14", [("3 × 4 + 2 = 14", True)]),
    ("2 + 3 x 4 = 20", [("2 + 3 x 4 = 20", False)]),
    ("20 - 6 / 2 = 17", [("20 - 6 / 2 = 17", True)]),
    ("1 + 2 + 3 + 4 = 10", [("1 + 2 + 3 + 4 = 10", True)]),
    # chains and several statements
    ("12 + 7 = 19 + 3 = 22", [("12 + 7 = 19", True), ("19 + 3 = 22", True)]),
    ("First 3 x 4 = 12. Then 12 + 5 = 18.", [("3 x 4 = 12", True), ("12 + 5 = 18", False)]),
    ("so 2x4=8 and 8+1=9.", [("2x4=8", True), ("8+1=9", True)]),
    # number formats
    ("1,200 - 200 = 1,000", [("1,200 - 200 = 1,000", True)]),
    ("2.5 + 2.5 = 5", [("2.5 + 2.5 = 5", True)]),
    ("10 / 3 = 3.33", [("10 / 3 = 3.33", True)]),
    ("10 / 3 = 3.4", [("10 / 3 = 3.4", False)]),
    ("5 - 7 = -2", [("5 - 7 = -2", True)]),
    ("GSM8K: sold <<48/2=24>>24 clips", [("48/2=24", True)]),
    # not statements: no operation, brackets we do not evaluate, hyphenated words, lists
    ("The answer is 19.", []),
    ("Total = 19", []),
    ("3 x (4 + 5) = 27", []),
    ("a well-known fact: 5 - 3 = 2", [("5 - 3 = 2", True)]),
    ("Numbers 3, 4 and 5.", []),
    ("Divide by zero: 4 / 0 = 1", [("4 / 0 = 1", False)]),
    ("", []),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_statements_found_and_checked(text, expected):
    assert [(s.text, s.true) for s in find_statements(text)] == expected


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_span_points_at_the_claimed_result():
    text = "Sam has $12 + $7 = $20 marbles. The answer is 19."
    (s,) = find_statements(text)
    assert text[s.span[0]:s.span[1]] == "20" and s.claimed == 20 and s.value == 19


def test_right_final_answer_with_a_false_step():
    stmts = find_statements("3 + 4 = 8, then 8 - 1 = 7. The answer is 7.")
    assert [s.true for s in stmts] == [False, True]


def test_evaluate_precedence_and_division_by_zero():
    F = Fraction
    assert evaluate((F(2), F(3), F(4)), ("+", "*")) == 14
    assert evaluate((F(8), F(2), F(2)), ("/", "/")) == 2
    assert evaluate((F(1), F(0)), ("/",)) is None


def test_question_numbers():
    assert question_numbers("Sam has 1,200 coins and $5.50 more, in 3 bags.") == {1200, Fraction(11, 2), 3}


def test_never_evaluates_text_as_code():
    assert find_statements("__import__('os').system('x') + 1 = 2") == []
    assert len(find_statements("1 + 1 = 2 " * 100)) == 20  # bounded
