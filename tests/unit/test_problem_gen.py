"""The arithmetic problem generator: deterministic, disjoint splits, levels, well-formed answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.problem_gen import generate_problems, split_of

ROOT = Path(__file__).resolve().parents[2]


def _solve(question: str) -> int:
    """Independent answer for the generator's question templates (parsed from the text)."""
    n = [int(x) for x in re.findall(r"\d+", question)]
    if "finds" in question:
        return n[0] + n[1]
    if "gave away" in question:
        return n[0] - n[1]
    if "How many" in question and "holds" in question:
        return n[0] * n[1]
    if "shares" in question:
        assert n[0] % n[1] == 0, question
        return n[0] // n[1]
    if "buys" in question:
        return n[0] * n[1] + n[2]
    raise AssertionError(f"unknown template: {question}")


def test_deterministic_by_seed():
    a = generate_problems(60, "train", (1, 2, 3), seed=11)
    b = generate_problems(60, "train", (1, 2, 3), seed=11)
    assert a == b
    c = generate_problems(60, "train", (1, 2, 3), seed=12)
    assert [p.question for p in a] != [p.question for p in c]


def test_deterministic_across_processes():
    """Same seed in a fresh interpreter with another hash seed: the same problems."""
    code = ("import json; from core.problem_gen import generate_problems as g; "
            "print(json.dumps([p.id for p in g(30, 'test', (1, 2, 3), 5)]))")
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [p.id for p in generate_problems(30, "test", (1, 2, 3), 5)]


def test_prefix_stable_when_asking_for_more():
    small = generate_problems(20, "train", (1, 2), seed=3)
    big = generate_problems(50, "train", (1, 2), seed=3)
    assert big[:20] == small


def test_train_and_test_are_disjoint_within_and_across_seeds():
    train = {p.question for s in range(4) for p in generate_problems(200, "train", (1, 2, 3), seed=s)}
    test = {p.question for s in range(4) for p in generate_problems(100, "test", (1, 2, 3), seed=s)}
    assert train and test
    assert train.isdisjoint(test)
    assert all(split_of(q) == "train" for q in train)
    assert all(split_of(q) == "test" for q in test)


def test_distinct_problems_and_ids():
    probs = generate_problems(300, "train", (1, 2, 3), seed=0)
    assert len({p.question for p in probs}) == 300
    assert len({p.id for p in probs}) == 300
    assert all(p.id.startswith("gen-train-") for p in probs)
    assert len({p.id for p in generate_problems(300, "test", (1, 2, 3), seed=0)} & {p.id for p in probs}) == 0


@pytest.mark.parametrize("levels", [(1,), (2,), (3,), (1, 2), (1, 2, 3), (3, 1)])
def test_levels(levels):
    probs = generate_problems(80, "train", levels, seed=7)
    cats = {p.category for p in probs}
    assert cats <= {f"level{lv}" for lv in levels}
    if len(levels) > 1:
        assert len(cats) > 1  # more than one level actually appears
    for p in probs:
        lv = int(p.category.removeprefix("level"))
        if lv == 3:
            assert "buys" in p.question
        else:
            assert "buys" not in p.question


@pytest.mark.parametrize("split", ["train", "test"])
def test_answers_are_integers_that_appear_in_the_reference(split):
    for p in generate_problems(200, split, (1, 2, 3), seed=1):
        assert re.fullmatch(r"\d+", p.answer), p.answer
        assert p.reference.endswith(f"The answer is {p.answer}.")
        assert re.search(rf"= {p.answer}\b", p.reference), p.reference  # the worked step reaches it
        assert int(p.answer) == _solve(p.question), (p.question, p.answer)
        assert p.source == "generated"


@pytest.mark.parametrize("levels", [(4,), (0,), (1, 5), (), ("1",)])
def test_bad_levels(levels):
    with pytest.raises(ValueError, match="levels"):
        generate_problems(5, "train", levels, seed=0)


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        generate_problems(5, "validation", (1,), seed=0)


def test_zero_problems():
    assert generate_problems(0, "train", (1,), seed=0) == []
