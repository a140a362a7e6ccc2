"""Rollout on real local Ray with real vLLM engines serving a tiny model, and the faults a
real engine has: its actor killed, its engine-core process killed, its engine stuck.

The two samplers run both engine layouts (actors/engine.py, sampler_engine_class): sampler 0
vLLM's AsyncLLM with its engine core in a process of its own (the GPU default), sampler 1 the
CPU default, vLLM's engine stepped in the actor's own process."""

from __future__ import annotations

import json
import threading
import time

import psutil
import pytest
import ray

from actors.buffer import Buffer
from actors.critic import CriticWorker
from actors.engine import SamplingSpec
from actors.pool import ActorPool
from actors.sampler import SamplerWorker
from actors.stream import CallDeadline, run_rollout
from core.grading import select_for_rft
from core.problem_gen import generate_problems
from core.records import Problem

pytestmark = pytest.mark.integration

ENGINE = dict(max_model_len=384, kv_cache_gib=1.0, dtype="float32")  # fp32: compared with transformers below
# top-p < 1 runs our CPU top-p plugin (actors/vllm_cpu_top_p.py) inside the engines
SPEC = SamplingSpec(n=3, temperature=1.0, top_p=0.9, max_new_tokens=16)


@pytest.fixture(scope="module")
def pools(ray_local, tiny_model):
    samplers = ActorPool(SamplerWorker, 2, (), num_cpus=1, name="samplers",
                         init_args_each=[(tiny_model, "base", ENGINE, "Solve it.", core)
                                         for core in ("own_process", "in_process")])
    # an untrained tiny judge writes no parseable score: that must be recorded, not fatal
    critics = ActorPool(CriticWorker, 1, ("model", tiny_model, "base", ENGINE, 24), num_cpus=1, name="critics")
    samplers.wait_ready(timeout=600)
    critics.wait_ready(timeout=600)
    yield samplers, critics
    samplers.shutdown()
    critics.shutdown()


def _lineage(run_dir):
    return [json.loads(x) for x in (run_dir / "lineage.jsonl").read_text().splitlines()]


def test_every_sample_generated_graded_delivered_once(pools, tmp_path):
    samplers, critics = pools
    problems = generate_problems(10, seed=3)
    buf = Buffer.remote(str(tmp_path), capacity=12)
    seen_max = []

    def consume():
        keys = []
        while True:
            got = ray.get(buf.take.remote("c0", 4, 5.0))
            keys += [k for k, _ in got["items"]]
            if got["items"]:
                ray.get(buf.ack.remote("c0", got["lease"], [k for k, _ in got["items"]], len(keys)))
            seen_max.append(ray.get(buf.stats.remote())["max_held"])
            if got["done"]:
                return keys

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("keys", consume()))
    t.start()  # the consumer reads while sampling is still going on
    report = run_rollout(problems, samplers, critics, buf, SPEC, batch_prompts=2)
    t.join(timeout=300)
    keys = out["keys"]
    expected = {f"{p.id}#{i}" for p in problems for i in range(SPEC.n)}
    assert sorted(keys) == sorted(expected)  # exactly once: no loss, no duplicate
    assert report.samples == report.graded == len(expected)
    stats = ray.get(buf.stats.remote())
    assert stats["max_held"] <= 12
    assert len(_lineage(tmp_path)) == len(expected)
    # the untrained judge writes no parseable score: recorded with its reason, not fatal
    grades = [r["grade"] for r in _lineage(tmp_path)]
    assert all(g["grader"].startswith("model:") for g in grades)
    ungraded = [g for g in grades if g["score"] is None]
    assert ungraded and all(g["reason"] and g["verdict"] == "unknown" for g in ungraded)
    assert report.ungraded == len(ungraded)


def test_grouping_waits_for_all_n(pools, tmp_path):
    samplers, critics = pools
    problems = generate_problems(4, seed=5)
    policy = lambda grp: (select_for_rft(grp, 7.0, 2), [grp])  # noqa: E731 - deliver whole groups
    buf = Buffer.remote(str(tmp_path), capacity=64, group_size=SPEC.n, group_policy=policy)
    run_rollout(problems, samplers, critics, buf, SPEC, batch_prompts=1)
    got = ray.get(buf.take.remote("c", 100, 5.0))
    groups = ray.get([r for _, r in got["items"]])
    assert len(groups) == len(problems)
    assert all(len(g) == SPEC.n and len({s.sample.problem.id for s in g}) == 1 for g in groups)
    decisions = (tmp_path / "decisions.jsonl").read_text().splitlines()
    assert len(decisions) == len(problems) * SPEC.n  # every sample kept or rejected, with a reason


@pytest.mark.parametrize("which", [0, 1], ids=["own_process", "in_process"])
def test_calls_share_the_engine_and_a_checkpoint_switch_waits_for_them(pools, tiny_model, which):
    samplers, _ = pools
    actor = samplers.actors[which]
    spec = SamplingSpec(n=4, temperature=1.0, max_new_tokens=48)
    problems = generate_problems(6, seed=9)
    # two calls in flight on one actor run together (continuous batching), not one after the other
    x, y = [actor.generate.options(num_returns=2).remote(problems[i::2], spec)[0] for i in range(2)]
    # Ray does not keep an async actor's calls in order: the calls below, sent at once, once started
    # first, and x ran on their weights. So they are sent once both of these run.
    deadline = time.monotonic() + 300
    while ray.get(actor.in_flight.remote()) < 2:
        assert time.monotonic() < deadline, "the two calls never ran at the same time"
        time.sleep(0.02)
    # calls that need other weights wait for the running ones; each carries the checkpoint it
    # needs, as the rollout's calls do
    v2 = (tiny_model, "v2")
    z, w = [actor.generate.options(num_returns=2).remote(problems[i:i + 2], spec, v2)[0] for i in (0, 2)]
    sx, sy, sz, sw = ray.get([x, y, z, w])
    try:
        assert sy["started"] < sx["finished"] and sx["started"] < sy["finished"]
        assert sx["version"] == sy["version"] == "base" and sz["version"] == sw["version"] == "v2"
        assert min(sz["started"], sw["started"]) >= max(sx["finished"], sy["finished"])
        # a later call without a checkpoint runs on the weights the engine now holds
        sv, _ = ray.get(actor.generate.options(num_returns=2).remote(problems[4:], spec))
        assert sv["version"] == "v2"
    finally:
        ray.get(actor.ensure_checkpoint.remote(tiny_model, "base"))


@pytest.mark.parametrize("which", [0, 1], ids=["own_process", "in_process"])
def test_swapped_weights_answer_as_transformers_does(pools, tiny_model, warm_tiny_model, which):
    """New weights swapped into an engine that has served others (the way every stage loads its
    model) answer as transformers does with them. The prompt is longer than a KV block (128
    tokens on CPU), so a prefix cache kept across the swap would answer with the old weights'
    keys and values; the tied LM head's packed copy must follow the new embedding too."""
    import torch
    from transformers import AutoModelForCausalLM

    samplers, _ = pools
    actor = samplers.actors[which]
    question = Problem("p", "Count: " + " ".join(str(i) for i in range(90)) + ". What is 3 plus 1?")
    greedy = SamplingSpec(n=1, temperature=0.0, max_new_tokens=8)
    ray.get(actor.generate.options(num_returns=2).remote([question], greedy)[1])  # the old weights fill the cache
    try:
        (swapped,) = ray.get(actor.generate.options(num_returns=2).remote([question], greedy,
                                                                          (warm_tiny_model, "warm"))[1])
    finally:
        ray.get(actor.ensure_checkpoint.remote(tiny_model, "base"))
    assert len(swapped.prompt_token_ids) > 128 and swapped.policy_version == "warm"
    model = AutoModelForCausalLM.from_pretrained(warm_tiny_model, dtype=torch.float32)
    want = model.generate(torch.tensor([swapped.prompt_token_ids]), max_new_tokens=len(swapped.token_ids),
                          do_sample=False)[0, len(swapped.prompt_token_ids):].tolist()
    assert swapped.token_ids == want  # the new weights' answer, not the old prefix's


def _observed(problems, run_dir, buf, report) -> tuple[set[str], dict]:
    """Expected keys, and what the rollout generated, graded (lineage) and delivered."""
    got = ray.get(buf.take.remote("c", 100_000, 5.0))
    lineage = [r["sample"]["problem"]["id"] + "#" + str(r["sample"]["sample_index"]) for r in _lineage(run_dir)]
    expected = {f"{p.id}#{i}" for p in problems for i in range(SPEC.n)}
    return expected, {"generated": report.samples, "graded": lineage, "consumed": [k for k, _ in got["items"]]}


def test_killed_sampler_loses_and_duplicates_nothing(pools, tmp_path, fault_log):
    samplers, critics = pools
    problems = generate_problems(16, seed=7)
    buf = Buffer.remote(str(tmp_path), capacity=1000)
    killed = {}

    def killer():
        time.sleep(2.0)
        ray.kill(samplers.actors[0], no_restart=False)  # Ray restarts it; its in-flight work is re-dispatched
        killed["at"] = time.time()

    threading.Thread(target=killer).start()
    report = run_rollout(problems, samplers, critics, buf, SPEC, batch_prompts=1)
    assert killed and report.retries >= 1
    fault_log("sampler actor killed", *_observed(problems, tmp_path, buf, report), retries=report.retries)
    samplers.wait_any_alive(timeout=300)


def engine_core(actor_pid: int, within_s: float = 120.0) -> psutil.Process:
    """The actor's vLLM engine-core process (vLLM titles it VLLM::EngineCore). Looked for among all
    its descendants, for up to `within_s`: in one CI run a just-restarted sampler answered its ping
    while no child of its process bore that title yet."""
    deadline = time.monotonic() + within_s
    while True:
        cores = [c for c in psutil.Process(actor_pid).children(recursive=True) if _titled_engine_core(c)]
        if len(cores) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(cores) == 1, f"actor {actor_pid} has engine cores {cores}"
    return cores[0]


def _titled_engine_core(proc: psutil.Process) -> bool:
    try:
        return "EngineCore" in proc.name() or "EngineCore" in " ".join(proc.cmdline())
    except psutil.Error:  # ended meanwhile
        return False


def gone(proc: psutil.Process, within_s: float) -> bool:
    """Exited (or a zombie waiting for a reaper) within the time given."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def test_engine_processes_killed_or_stuck_mid_stage(pools, tmp_path, fault_log):
    """A sampler's engine core and the judge's engine SIGKILLed (as an out-of-memory kill would),
    the other sampler's engine stopped (SIGSTOP: no call returns). Sampler 0's engine core is a
    process of its own, so its actor sees the core die; the judge's and sampler 1's engines run
    inside their actors' processes (actors/engine.py), so the process that holds the model is
    the actor itself."""
    samplers, critics = pools
    problems = generate_problems(12, seed=8)
    buf = Buffer.remote(str(tmp_path), capacity=1000)
    (s0, s1), (c0,) = samplers.wait_ready(), critics.wait_ready()
    cores = {"sampler": engine_core(s0), "judge": psutil.Process(c0), "stuck": psutil.Process(s1)}
    hit = threading.Event()

    def inject(ev: dict) -> None:  # on the first graded batch: the stage is under way
        if ev["kind"] == "grade" and not hit.is_set():
            hit.set()
            cores["sampler"].kill()
            cores["judge"].kill()
            cores["stuck"].suspend()

    try:
        report = run_rollout(problems, samplers, critics, buf, SPEC, batch_prompts=1, on_progress=inject,
                             deadline=CallDeadline(20.0, 0.5))
        stuck_reaped = gone(cores["stuck"], 60)  # killed, not left stopped (a loaded machine is slow)
    finally:
        if not gone(cores["stuck"], 0.5):
            cores["stuck"].kill()
    new = samplers.wait_ready(timeout=600) + critics.wait_ready(timeout=600)
    assert hit.is_set() and report.hung_kills >= 1
    assert not set(new) & {s0, s1, c0}, "every faulted actor was replaced"
    assert stuck_reaped, "the stuck sampler was not killed"
    fault_log("engine cores killed (a sampler's, the judge's) and one stuck", *_observed(problems, tmp_path, buf, report),
              retries=report.retries, hung_kills=report.hung_kills)
