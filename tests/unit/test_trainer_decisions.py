"""The learner loop's decisions (learners/trainer.py), exhaustively: pure functions on counts and state."""

from __future__ import annotations

import itertools

import pytest

from learners.trainer import after_pass, loss_normalizer, pass_action


@pytest.mark.parametrize("n_total,n_unfinished", itertools.product([0, 1, 7], [0, 1, 2]))
def test_pass_action_trains_only_when_some_rank_has_data(n_total, n_unfinished):
    action = pass_action(n_total, n_unfinished)
    if n_total > 0:
        assert action == "train"
    else:
        assert action == ("wait" if n_unfinished else "end_pass")


@pytest.mark.parametrize("stream_done,epoch,epochs", itertools.product([False, True], [0, 1, 2, 3], [1, 2, 3]))
def test_after_pass_counts_the_stream_as_pass_zero(stream_done, epoch, epochs):
    state = {"micro": 5, "epoch": epoch, "replay_pos": 4, "stream_done": stream_done, "tokens": 9}
    new, done = after_pass(state, epochs)
    want_epoch = epoch + 1 if stream_done else 1
    assert new == state | {"epoch": want_epoch, "stream_done": True, "replay_pos": 0}
    assert done == (want_epoch >= epochs)
    assert state["replay_pos"] == 4  # the input is not changed


@pytest.mark.parametrize("world", [1, 2, 4])
def test_loss_normalizer_makes_the_rank_average_a_global_mean(world):
    # ranks hold different counts; DeepSpeed averages the ranks' gradients (sum / world)
    counts = [3, 0, 5, 1][:world]
    per_item = 2.0  # every item's loss
    n_global = sum(counts)
    averaged = sum(c * per_item / loss_normalizer(n_global, world) for c in counts) / world
    assert averaged == pytest.approx(per_item if n_global else 0.0)
    assert loss_normalizer(0, world) > 0  # a placeholder-only round never divides by zero


@pytest.mark.parametrize("stage, world, kept", [(0, 1, False), (0, 2, True), (2, 1, True), (3, 4, True)])
def test_identity_allreduce_is_skipped_only_for_one_zero0_rank(stage, world, kept):
    """With one ZeRO-0 rank DeepSpeed's all-reduce is the identity; elsewhere it must stay."""
    from types import SimpleNamespace

    from learners.ds_engine import skip_lone_allreduce

    engine = SimpleNamespace(zero_optimization_stage=lambda: stage, dp_world_size=world,
                             enable_backward_allreduce=True)
    skip_lone_allreduce(engine)
    assert engine.enable_backward_allreduce is kept
