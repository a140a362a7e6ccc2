"""start_local_ray tries again only when the raylet was too slow to register.

A raylet that misses Ray's 30 s registration window cannot be produced on demand, so
ray.init and ray.shutdown are replaced here by recorders (the only stand-ins in this file)."""

from __future__ import annotations

import pytest

from pipelines import runtime

SLOW = Exception("The current node timed out during startup. This could happen because some of the raylet "
                 "failed to startup or the GCS has become overloaded.")


def _fake_ray(monkeypatch, outcomes: list):
    calls = []

    def init(**kw):
        calls.append(("init", kw))
        out = outcomes.pop(0)
        if out is not None:
            raise out

    monkeypatch.setattr(runtime.ray, "init", init)
    monkeypatch.setattr(runtime.ray, "shutdown", lambda: calls.append(("shutdown", {})))
    return calls


def test_a_slow_raylet_is_started_again_with_the_same_arguments(monkeypatch):
    calls = _fake_ray(monkeypatch, [SLOW, None])
    runtime.start_local_ray(address="local", num_cpus=2)
    assert calls == [("init", {"address": "local", "num_cpus": 2}), ("shutdown", {}),
                     ("init", {"address": "local", "num_cpus": 2})]


def test_gives_up_after_the_last_attempt(monkeypatch):
    calls = _fake_ray(monkeypatch, [SLOW, SLOW, SLOW])
    with pytest.raises(Exception, match="timed out during startup"):
        runtime.start_local_ray(attempts=3, address="local")
    assert [c for c, _ in calls] == ["init", "shutdown", "init", "shutdown", "init"]


def test_any_other_error_is_not_retried(monkeypatch):
    calls = _fake_ray(monkeypatch, [ValueError("bad num_cpus"), None])
    with pytest.raises(ValueError, match="bad num_cpus"):
        runtime.start_local_ray(address="local", num_cpus=-1)
    assert [c for c, _ in calls] == ["init"]


def test_a_local_head_turns_off_ray_trains_idle_helpers_unless_the_user_set_them():
    environ = {"RAY_TRAIN_METRICS_ENABLED": "1", "OTHER": "x"}
    env = runtime.local_head_env({"A": "1"}, environ)
    assert env == {"A": "1", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "1"}
    assert environ == {"RAY_TRAIN_METRICS_ENABLED": "1", "OTHER": "x", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


def test_a_local_heads_workers_inherit_the_environment_instead_of_a_runtime_env(monkeypatch):
    """No runtime_env: with one, Ray starts every worker through setup_worker.py first."""
    calls = _fake_ray(monkeypatch, [None])
    environ = {"PATH": "/bin"}
    runtime.start_local_head({"PYTHONPATH": "/repo", "A": "1"}, environ, num_cpus=2)
    assert calls == [("init", {"address": "local", "num_cpus": 2})]
    assert environ == {"PATH": "/bin", "PYTHONPATH": "/repo", "A": "1"}
