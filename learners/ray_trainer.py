"""Ray Train's TorchTrainer, less two helper actors that our learner runs cannot use.

Every Ray Train 2.60 run starts helper actors, each a process that imports Ray Train, Ray Data,
pandas and pyarrow. On a 2-core machine that is CPU time at every learner start (what each
process used: bench/results/learner_start.json), and the suite makes about twenty starts. Two of
them do nothing for us:

- the DatasetManager, started even when no Ray Dataset is given. Our learners read the rollout
  buffer actor, never a Dataset;
- the PlacementGroupCleaner, which asks Ray's State API every second
  whether the controller lives, to free the learner's placement group if it died. The State API
  is served by the dashboard, which a local head here does not run, so the cleaner can never see
  anything: it only failed a query each second and logged a warning about it.
  Where a dashboard runs (any `ray start` or `ray job submit` cluster), it is kept.

The private names this relies on are checked against the pinned Ray by
tests/unit/test_ray_trainer.py.
"""

from __future__ import annotations

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback


def unused_callbacks(has_datasets: bool, state_api: bool) -> tuple[type, ...]:
    return (() if has_datasets else (DatasetsCallback,)) + (() if state_api else (PlacementGroupCleanerCallback,))


def state_api_served() -> bool:
    """Whether this cluster has a dashboard, which serves the State API."""
    from ray._private.services import get_webui_url_from_internal_kv

    return bool(get_webui_url_from_internal_kv())


class BufferFedTorchTrainer(TorchTrainer):
    def __init__(self, *args, state_api: bool | None = None, **kwargs):
        """state_api: whether Ray's State API is served; None asks the connected cluster at fit()."""
        super().__init__(*args, **kwargs)
        self._state_api = state_api

    def _create_default_callbacks(self):
        state_api = state_api_served() if self._state_api is None else self._state_api
        drop = unused_callbacks(bool(self.datasets), state_api)
        return [c for c in super()._create_default_callbacks() if not isinstance(c, drop)]
