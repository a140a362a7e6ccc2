"""The module order that `./dev test` hands its two pytest-xdist workers (tests/conftest.py),
checked against xdist's own rule: each worker starts with two modules and takes the next
whenever two or fewer of its tests are pending."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LONGEST_FIRST, module_order

ROOT = Path(__file__).resolve().parents[1]
LONG = {"t/integration/test_sweep.py": 1, "t/integration/test_pipeline.py": 1,
        "t/integration/test_critic_selection.py": 2, "t/integration/test_learner.py": 8}
SHORT = {"t/unit/test_a.py": 3, "t/unit/test_b.py": 40, "t/unit/test_sweep.py": 5, "t/unit/test_d.py": 12}


def first_two_per_worker(order: list[str], counts: dict[str, int]) -> tuple[list[str], list[str]]:
    """xdist loadfile at the start: module 1 to worker 1, module 2 to worker 2, then each
    worker one more while it has two or fewer tests pending."""
    w1, w2 = [order[0]], [order[1]]
    rest = order[2:]
    for w in (w1, w2):
        if sum(counts[m] for m in w) <= 2 and rest:
            w.append(rest.pop(0))
    return w1, w2


def test_the_two_longest_modules_start_on_different_workers_and_take_short_ones():
    counts = {**SHORT, **LONG}
    order = module_order(counts)
    w1, w2 = first_two_per_worker(order, counts)
    assert w1[0] == "t/integration/test_pipeline.py" and w2[0] == "t/integration/test_learner.py"
    assert all("/unit/" in m for m in w1[1:] + w2[1:])
    assert order.index("t/integration/test_sweep.py") < order.index("t/integration/test_critic_selection.py")


def test_long_ones_longest_first_each_followed_by_a_short_one_most_tests_first():
    # t/unit/test_sweep.py shares its name with a long integration module but is short
    assert module_order({**SHORT, **LONG}) == [
        "t/integration/test_pipeline.py", "t/integration/test_learner.py", "t/unit/test_b.py",
        "t/unit/test_d.py", "t/integration/test_sweep.py", "t/unit/test_sweep.py", "t/integration/test_critic_selection.py",
        "t/unit/test_a.py"]


@pytest.mark.parametrize("counts", [{}, SHORT, LONG, {**dict(list(LONG.items())[:1]), **SHORT}, {**SHORT, **LONG}])
def test_every_module_once(counts):
    assert sorted(module_order(counts)) == sorted(counts)


def test_the_known_long_modules_exist():
    here = {str(p.relative_to(ROOT)) for p in ROOT.rglob("test_*.py")}
    assert set(LONGEST_FIRST) <= here, set(LONGEST_FIRST) - here
