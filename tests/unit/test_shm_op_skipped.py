"""A learner start JIT-builds no DeepSpeed op (learners/ds_engine.skip_inference_shm_op)."""

from __future__ import annotations

import os

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def test_the_comm_backend_builds_no_shm_op(tmp_path, monkeypatch):
    import deepspeed.ops
    from deepspeed.comm.torch import build_shm_op

    from learners.ds_engine import skip_inference_shm_op

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # a build would land here
    before = dict(deepspeed.ops.__compatible_ops__)
    skip_inference_shm_op()
    assert build_shm_op() is None and not list(tmp_path.iterdir())
    after = deepspeed.ops.__compatible_ops__
    assert after.pop("deepspeed_shm_comm") is False
    before.pop("deepspeed_shm_comm", None)
    assert after == before  # every other op as DeepSpeed probed it
