"""Our own arithmetic word-problem generator: the default data for the embedded model.

Deterministic by seed. Train and test are disjoint by construction: a problem's
split is a hash of its question text, so the same question can never land in both.
Levels: 1 = one addition/subtraction, 2 = one multiplication/division,
3 = two steps mixing both.
"""

from __future__ import annotations

import hashlib
import random

from core.records import Problem

NAMES = ["Sam", "Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lily", "Ravi", "Emma", "Kai", "Nina"]
THINGS = ["marbles", "apples", "stickers", "pens", "books", "coins", "cards", "shells", "cookies", "toys"]
BOXES = ["box", "bag", "jar", "basket", "shelf", "pack"]


def _add(r: random.Random):
    n, t = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(2, 60), r.randint(2, 40)
    q = f"{n} has {a} {t} and finds {b} more. How many {t} does {n} have now?"
    return q, f"{n} has {a} + {b} = {a + b} {t}.", a + b


def _sub(r: random.Random):
    n, t = r.choice(NAMES), r.choice(THINGS)
    a = r.randint(10, 90)
    b = r.randint(1, a - 1)
    q = f"{n} had {a} {t} and gave away {b}. How many {t} does {n} have left?"
    return q, f"{n} has {a} - {b} = {a - b} {t} left.", a - b


def _mul(r: random.Random):
    t, box = r.choice(THINGS), r.choice(BOXES)
    a, b = r.randint(2, 12), r.randint(2, 12)
    q = f"A {box} holds {a} {t}. How many {t} are in {b} {box}s?"
    return q, f"There are {a} x {b} = {a * b} {t}.", a * b


def _div(r: random.Random):
    n, t = r.choice(NAMES), r.choice(THINGS)
    b, c = r.randint(2, 10), r.randint(2, 12)
    q = f"{n} shares {b * c} {t} equally among {b} friends. How many {t} does each friend get?"
    return q, f"Each friend gets {b * c} / {b} = {c} {t}.", c


def _two_step(r: random.Random):
    n, t, box = r.choice(NAMES), r.choice(THINGS), r.choice(BOXES)
    a, b, c = r.randint(2, 9), r.randint(2, 9), r.randint(1, 20)
    q = f"{n} buys {a} {box}s with {b} {t} in each, then gets {c} more {t}. How many {t} does {n} have?"
    sol = f"{n} buys {a} x {b} = {a * b} {t}. Then {a * b} + {c} = {a * b + c} {t}."
    return q, sol, a * b + c


LEVELS = {1: (_add, _sub), 2: (_mul, _div), 3: (_two_step,)}


def split_of(question: str, test_fraction: float = 0.2) -> str:
    h = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16)
    return "test" if h / 0xFFFFFFFF < test_fraction else "train"


def generate_problems(n: int, split: str = "train", levels=(1, 2), seed: int = 0) -> list[Problem]:
    """n distinct problems of the given split; same arguments give the same list."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ValueError(f"levels must be a non-empty subset of {sorted(LEVELS)}, got {list(levels)}")
    r = random.Random(f"{seed}-{split}")
    makers = [m for lv in levels for m in LEVELS[lv]]
    out: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise ValueError(f"could not generate {n} distinct {split} problems for levels {list(levels)}")
        maker = r.choice(makers)
        q, sol, ans = maker(r)
        if q in seen or split_of(q) != split:
            continue
        seen.add(q)
        level = next(lv for lv, ms in LEVELS.items() if maker in ms)
        pid = f"gen-{split}-{hashlib.sha1(q.encode()).hexdigest()[:10]}"
        out.append(Problem(pid, q, f"{sol}\nThe answer is {ans}.", str(ans), f"level{level}", "generated"))
    return out
