"""BufferFedTorchTrainer drops Ray Data's callback only without datasets, and the placement-group
cleaner only where no State API is served; everything else Ray Train sets up stays.

It overrides a private method of the pinned Ray Train; if an upgrade renames it or changes
what it returns, these tests fail instead of the learner silently starting the actors again."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("ray.train")

from ray.train import ScalingConfig  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

from learners.ray_trainer import BufferFedTorchTrainer  # noqa: E402

DATA, CLEANER = "DatasetsCallback", "PlacementGroupCleanerCallback"


def _loop(cfg):  # never run: only the trainers' callback lists are compared
    pass


def _kinds(trainer) -> list[str]:
    return [type(c).__name__ for c in trainer._create_default_callbacks()]


def _datasets(has: bool) -> dict | None:
    return {"train": lambda: None} if has else None  # a dataset factory, never called: no Ray starts


@pytest.mark.parametrize("has_datasets,state_api", list(itertools.product([False, True], repeat=2)))
def test_only_the_unusable_helpers_are_left_out(has_datasets, state_api):
    stock = _kinds(TorchTrainer(_loop, scaling_config=ScalingConfig(num_workers=1), datasets=_datasets(has_datasets)))
    assert DATA in stock and CLEANER in stock  # else Ray changed and this class has no job left
    ours = _kinds(BufferFedTorchTrainer(_loop, scaling_config=ScalingConfig(num_workers=1),
                                        datasets=_datasets(has_datasets), state_api=state_api))
    dropped = ({DATA} if not has_datasets else set()) | ({CLEANER} if not state_api else set())
    assert ours == [k for k in stock if k not in dropped]


def test_the_cleaner_is_the_one_that_polls_the_state_api():
    """The reason it may go where no dashboard runs: its only way to see the controller."""
    import inspect

    from ray.train.v2._internal.execution.controller import placement_group_cleaner

    src = inspect.getsource(placement_group_cleaner.PlacementGroupCleaner._monitor_loop)
    assert "is_actor_alive" in src and "RayStateApiException" in src
