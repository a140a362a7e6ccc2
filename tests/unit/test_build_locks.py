"""A dead JIT build's lock file must not hang every later learner start (learners/ds_engine.py)."""

from __future__ import annotations

import os
import threading
import time

from learners.ds_engine import clear_stale_build_locks, stale_build_lock_sweeper


def _lock(root, name: str, age_s: float):
    d = root / name
    d.mkdir()
    lock = d / "lock"
    lock.touch()
    os.utime(lock, (time.time() - age_s, time.time() - age_s))
    return lock


def test_only_locks_older_than_any_build_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    old, fresh = _lock(tmp_path, "deepspeed_shm_comm", 3600), _lock(tmp_path, "other_op", 5)
    assert clear_stale_build_locks(600) == [old]
    assert not old.exists() and fresh.exists()


def test_the_sweeper_releases_a_loader_already_waiting_on_a_dead_builders_lock(tmp_path, monkeypatch):
    """The waiter is torch's own FileBaton.wait, the call DeepSpeed's op loader blocks in."""
    from torch.utils.file_baton import FileBaton

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = _lock(tmp_path, "deepspeed_shm_comm", 3600)
    baton = FileBaton(str(lock), wait_seconds=0.01)
    assert not baton.try_acquire()  # as a loader finds it: held
    waiter = threading.Thread(target=baton.wait, daemon=True)
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive()  # without the sweeper it would wait forever
    with stale_build_lock_sweeper(every_s=0.05):
        waiter.join(timeout=10)
    assert not waiter.is_alive() and not lock.exists()


def test_the_interpreters_own_ninja_comes_first_on_path():
    import sys
    from pathlib import Path

    from learners.ds_engine import prefer_own_ninja

    own = str(Path(sys.executable).parent)
    env = {"PATH": f"/usr/bin:{own}:/bin"}
    prefer_own_ninja(env)
    assert env["PATH"] == f"{own}:/usr/bin:/bin"
    prefer_own_ninja(env)  # idempotent
    assert env["PATH"] == f"{own}:/usr/bin:/bin"
