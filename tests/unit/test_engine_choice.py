"""Which vLLM engine a sampler runs (actors/engine.py: sampler_engine_class), every case."""

from __future__ import annotations

import pytest

from actors.engine import AsyncEngine, SteppedEngine, sampler_engine_class
from actors.pool import ActorPool

CASES = [  # core, gpu, VLLM_ENABLE_V1_MULTIPROCESSING (None: unset), expected
    ("auto", False, None, SteppedEngine),
    ("auto", False, "0", SteppedEngine),
    ("auto", False, "1", AsyncEngine),  # the user asked for vLLM's own layout
    ("auto", True, None, AsyncEngine),
    ("auto", True, "0", AsyncEngine),
    ("auto", True, "1", AsyncEngine),
    ("in_process", False, None, SteppedEngine),
    ("in_process", True, "1", SteppedEngine),  # an explicit choice wins over both
    ("own_process", False, None, AsyncEngine),
    ("own_process", False, "0", AsyncEngine),
    ("own_process", True, None, AsyncEngine),
]


@pytest.mark.parametrize("core,gpu,mp,expected", CASES)
def test_sampler_engine_class(core, gpu, mp, expected):
    environ = {} if mp is None else {"VLLM_ENABLE_V1_MULTIPROCESSING": mp}
    assert sampler_engine_class(core, gpu, environ) is expected


def test_an_unknown_core_is_refused_by_name():
    with pytest.raises(ValueError, match="'separate'"):
        sampler_engine_class("separate", False, {})


def test_a_pool_refuses_constructor_tuples_that_do_not_match_its_size():
    class Worker:
        def __init__(self, x):
            self.x = x

    with pytest.raises(ValueError, match="samplers: 1 constructor argument tuples for 2 actors"):
        ActorPool(Worker, 2, (), name="samplers", init_args_each=[(1,)])
