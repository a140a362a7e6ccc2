"""Fault injection with real processes: critic and buffer actors killed mid-stage, a node
removed from a multi-node cluster, and a load of 10x the buffer's capacity.

After each fault: every prompt x sample is graded exactly once and consumed exactly once.
(Sampler, learner-worker and driver kills live in test_rollout, test_learner and
test_pipeline.) Results are recorded for docs/results/reliability.json.
"""

from __future__ import annotations

import json
import os
import threading
import time

import psutil
import pytest
import ray
from ray.exceptions import OwnerDiedError, RayActorError

from actors.buffer import Buffer
from actors.engine import SamplingSpec
from actors.pool import ActorPool
from actors.stream import pipeline_budget, run_rollout
from actors.synthetic import SyntheticCritic, SyntheticSampler
from core.problem_gen import generate_problems

pytestmark = pytest.mark.integration
SPEC = SamplingSpec(n=4)


def consume(buf, name="learner", batch=16) -> list[str]:
    """A learner-like consumer: take, fetch, ack; a batch whose owner died is left unacked
    (the restarted buffer re-delivers it)."""
    keys: list[str] = []
    while True:
        try:
            got = ray.get(buf.take.remote(name, batch, 5.0))
            if got["items"]:
                ray.get([r for _, r in got["items"]])
                ray.get(buf.ack.remote(name, got["lease"], [k for k, _ in got["items"]], len(keys)))
                keys += [k for k, _ in got["items"]]
            if got["done"]:
                return keys
        except (OwnerDiedError, RayActorError):
            time.sleep(0.2)


def run_with_consumer(problems, samplers, critics, buf, fault=None, batch_prompts=2):
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("keys", consume(buf)))
    t.start()
    if fault:
        threading.Thread(target=fault, daemon=True).start()
    rep = run_rollout(problems, samplers, critics, buf, SPEC, batch_prompts)
    t.join(timeout=300)
    return rep, out["keys"]


def check_exactly_once(problems, lineage_path, consumed, fault_log, fault):
    expected = {f"{p.id}#{i}" for p in problems for i in range(SPEC.n)}
    graded = [json.loads(x) for x in lineage_path.read_text().splitlines()]
    gkeys = [f"{g['sample']['problem']['id']}#{g['sample']['sample_index']}" for g in graded]
    lost = len(expected - set(consumed)) + len(expected - set(gkeys))
    dup = (len(gkeys) - len(set(gkeys))) + (len(consumed) - len(set(consumed)))
    fault_log(fault, survived=lost == 0 and dup == 0, lost=lost, duplicated=dup)
    assert set(gkeys) == expected and len(gkeys) == len(expected), "graded exactly once"
    assert sorted(consumed) == sorted(expected), "consumed exactly once"


@pytest.fixture(scope="module")
def synthetic_pools(ray_local):
    samplers = ActorPool(SyntheticSampler, 2, (0.3,), num_cpus=0.25)
    critics = ActorPool(SyntheticCritic, 2, (0.3,), num_cpus=0.25)
    samplers.wait_ready()
    critics.wait_ready()
    yield samplers, critics
    samplers.shutdown()
    critics.shutdown()


def test_critic_killed_mid_stage(synthetic_pools, tmp_path, fault_log):
    samplers, critics = synthetic_pools
    problems = generate_problems(24, seed=11)
    buf = Buffer.remote(str(tmp_path), capacity=64)
    rep, keys = run_with_consumer(problems, samplers, critics, buf,
                                  fault=lambda: (time.sleep(1.0), ray.kill(critics.actors[0], no_restart=False)))
    assert rep.retries >= 1
    check_exactly_once(problems, tmp_path / "lineage.jsonl", keys, fault_log, "critic actor killed")


def test_buffer_killed_mid_stage_rebuilds_from_lineage(synthetic_pools, tmp_path, fault_log):
    samplers, critics = synthetic_pools
    problems = generate_problems(24, seed=12)
    buf = Buffer.remote(str(tmp_path), capacity=64)
    rep, keys = run_with_consumer(problems, samplers, critics, buf,
                                  fault=lambda: (time.sleep(1.5), ray.kill(buf, no_restart=False)))
    stats = ray.get(buf.stats.remote())
    assert stats["received"] == len(problems) * SPEC.n  # the restarted buffer recovered what it had
    check_exactly_once(problems, tmp_path / "lineage.jsonl", keys, fault_log, "buffer actor killed")


def test_load_ten_times_capacity_keeps_memory_flat(synthetic_pools, tmp_path, fault_log):
    samplers, critics = synthetic_pools
    fast_s = ActorPool(SyntheticSampler, 2, (0.0, 256, 4000), num_cpus=0.25)
    # Critics slower than samplers: the backlog between them must stay bounded too
    # (an unbounded one once burst into the buffer and locked out the consumer).
    fast_c = ActorPool(SyntheticCritic, 2, (0.02,), num_cpus=0.25)
    capacity = 200
    problems = generate_problems(600, seed=13)  # 2400 items: 12x the capacity
    buf = Buffer.remote(str(tmp_path), capacity=capacity)
    me = psutil.Process()
    rss: list[float] = []
    store: list[float] = []
    stop = threading.Event()

    def sample_memory():
        while not stop.is_set():
            rss.append(me.memory_info().rss / 2**20)
            mem = ray.available_resources().get("object_store_memory")
            total = ray.cluster_resources().get("object_store_memory")
            if mem is not None and total:
                store.append((total - mem) / 2**20)
            stop.wait(0.2)

    threading.Thread(target=sample_memory, daemon=True).start()
    out: dict = {}

    def slow_consumer():  # slower than the producers, so backpressure has to hold
        keys = []
        while True:
            got = ray.get(buf.take.remote("learner", 32, 5.0))
            if got["items"]:
                time.sleep(0.05)
                ray.get(buf.ack.remote("learner", got["lease"], [k for k, _ in got["items"]], len(keys)))
                keys += [k for k, _ in got["items"]]
            if got["done"]:
                out["keys"] = keys
                return

    t = threading.Thread(target=slow_consumer)
    t.start()
    backlog = {"now": 0, "max": 0}

    def track(ev):  # batches sampled but not yet graded
        backlog["now"] += 1 if ev["kind"] == "sample" else -1
        backlog["max"] = max(backlog["max"], backlog["now"])

    try:
        run_rollout(problems, fast_s, fast_c, buf, SPEC, batch_prompts=8, per_actor_inflight=2,
                    max_pending_puts=2, on_progress=track)
        t.join(timeout=600)
    finally:
        stop.set()
    budget = pipeline_budget(len(fast_s), len(fast_c), 2, 2)
    assert backlog["max"] <= budget, f"sampler->critic backlog reached {backlog['max']} batches (budget {budget})"
    stats = ray.get(buf.stats.remote())
    assert stats["max_held"] <= capacity
    assert len(out["keys"]) == len(problems) * SPEC.n >= 10 * capacity
    third = max(1, len(rss) // 3)
    growth = max(rss[-third:]) - max(rss[:third])
    assert growth < 150, f"driver RSS grew {growth:.0f} MiB under load"
    fault_log("load 12x buffer capacity", survived=True, lost=0, duplicated=0,
              peak_rss_mb=max(rss), rss_growth_mb=growth, peak_object_store_mb=max(store) if store else None,
              items=len(out["keys"]), capacity=capacity, max_held=stats["max_held"])
    fast_s.shutdown()
    fast_c.shutdown()


def test_node_removed_actors_rescheduled(tmp_path, fault_log):
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    doomed = c.add_node(num_cpus=1, resources={"worker_node": 4})
    c.add_node(num_cpus=1, resources={"worker_node": 4})
    c.wait_for_nodes()
    ray.init(address=c.address, runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
    try:
        samplers = ActorPool(SyntheticSampler, 2, (0.3,), num_cpus=0.25, resources={"worker_node": 1})
        critics = ActorPool(SyntheticCritic, 2, (0.3,), num_cpus=0.25, resources={"worker_node": 1})
        samplers.wait_ready()
        critics.wait_ready()
        problems = generate_problems(24, seed=14)
        buf = Buffer.options(resources={"head": 1}).remote(str(tmp_path), capacity=64)
        rep, keys = run_with_consumer(problems, samplers, critics, buf,
                                      fault=lambda: (time.sleep(1.0), c.remove_node(doomed)))
        check_exactly_once(problems, tmp_path / "lineage.jsonl", keys, fault_log, "node removed")
        assert len(samplers.available()) >= 1
    finally:
        ray.shutdown()
        c.shutdown()
