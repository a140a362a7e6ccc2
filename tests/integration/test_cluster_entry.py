"""The way users run it: `ray job submit` to a real two-node cluster.

`ray start --head` and `ray start --address` make two raylets on this machine, with token auth
on (one token, given to both nodes and to the client). The nodes take the address Ray itself
picks for this machine, not loopback: a driver turns a loopback bootstrap address into that
address (ray._private.services.resolve_ip_for_localhost), so on a machine with a default route a
job's driver could not reach a cluster bound to 127.0.0.1 (it failed so, after a 4-minute wait).
Custom resources put the samplers and the learner on the worker node, the critic and the buffer on the head, so every sample
crosses nodes twice through the object store: sampler -> buffer -> learner. (One test for
both the way in and the placement: each costs a tiny run.)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_pipeline import ROOT, tiny_overrides

pytestmark = pytest.mark.integration

HEAD = {"critic_node": 8, "buffer_node": 8}
WORKER = {"sampler_node": 8, "learner_node": 8}
# Ports every raylet would otherwise share on one machine: the dashboard agent's (fixed by
# default, also taken by other local clusters) and the worker-port range.
OWN_PORTS = ["--dashboard-agent-listen-port=0", "--min-worker-port=0", "--max-worker-port=0"]

# Runs against the cluster in its own process (token auth comes from ~/.ray there).
STATE = """
import json, sys
from ray.util.state import list_actors, list_nodes
a = sys.argv[1]
nodes = [{"id": n.node_id, "alive": n.state == "ALIVE", "resources": n.resources_total} for n in list_nodes(address=a)]
actors = [{"cls": x.class_name, "node": x.node_id} for x in list_actors(address=a, limit=1000, detail=True)]
print(json.dumps({"nodes": nodes, "actors": actors}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", *args, "--block", "--disable-usage-stats"],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:  # `ray start --block` sat out the whole grace every time (30 s of CI); the group dies either way
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def state(address: str, env: dict) -> dict:
    res = subprocess.run([sys.executable, "-c", STATE, address], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _alive_nodes(address: str, env: dict) -> int:
    try:
        return sum(n["alive"] for n in state(address, env)["nodes"])
    except AssertionError:  # the state API is not answering yet
        return 0


def _wait_for(what: str, ok, logs: list[Path], timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ok():
            return
        time.sleep(1)
    pytest.fail(f"{what} did not come up: " + "\n".join(p.read_text()[-2000:] for p in logs))


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def cluster(tmp_path):
    import ray

    ray.shutdown()  # this module drives its own cluster
    port, dash = _free_port(), _free_port()
    # The same explicit token for head, worker and client: not whatever ~/.ray holds.
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    logs = [tmp_path / "head.log", tmp_path / "worker.log"]
    procs = [_ray(["start", "--head", f"--port={port}", "--dashboard-host=127.0.0.1",
                   f"--dashboard-port={dash}", "--include-dashboard=true", "--num-cpus=2",
                   f"--resources={json.dumps(HEAD)}", *OWN_PORTS], env, logs[0])]
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_for("the ray head", lambda: _port_open(dash), logs[:1])
        procs.append(_ray(["start", f"--address=127.0.0.1:{port}", "--num-cpus=4",
                           f"--resources={json.dumps(WORKER)}", *OWN_PORTS], env, logs[1]))
        _wait_for("the worker node", lambda: _alive_nodes(address, env) == 2, logs)
        yield address, env
    finally:
        for p in reversed(procs):
            _stop(p)


def test_ray_job_submit_runs_the_pipeline_across_nodes(cluster, warm_tiny_model, tmp_path):
    """What is proven here is the way in (job submit, token auth, runtime_env, the job server's
    record) and placement across nodes. One RFT stage has every kind of actor (samplers, critic,
    buffer, learner); the other stages are covered by test_pipeline.py."""
    address, env = cluster
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, warm_tiny_model) + [
        "eval.recheck_cut_offs=false",  # test_pipeline checks the recheck; here it would only double the eval
        "resources.ray_address=auto", "run.stages=[rft]", "eval.mathusereval_path=''",
        "resources.samplers.num_actors=2", "resources.samplers.custom_resources={sampler_node: 1}",
        "resources.critics.custom_resources={critic_node: 1}", "resources.learner_resources={learner_node: 1}",
        "resources.buffer_resources={buffer_node: 1}", "logging.wandb=false"]
    env = dict(env, WANDB_MODE="offline")
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", address,
           "--runtime-env", "cluster/runtime_env.yaml", "--working-dir", ".", "--",
           "python", "-m", "pipelines.self_critique", "--config", "configs/cpu-demo.yaml", *overrides]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    job_id = re.search(r"Job '(raysubmit_\w+)' succeeded", out)
    assert job_id, out[-5000:]
    # The cluster's own record of the job, not the CLI's wording: ask the job server.
    ask = ("import sys; from ray.job_submission import JobSubmissionClient as C; "
           "print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)")
    status = subprocess.run([sys.executable, "-c", ask, address, job_id.group(1)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.stdout.strip().splitlines()[-1:] == ["SUCCEEDED"], status.stdout + status.stderr
    rft = json.loads((run_dir / "manifest.json").read_text())["stages"]["rft"]
    assert rft["status"] == "done" and rft["metrics"]["train_steps"] > 0
    assert (Path(rft["checkpoint"]) / "config.json").exists()
    _check_placement(state(address, env))
    # every RFT prompt x sample crossed from the sampler node to the buffer node exactly once
    lines = (run_dir / "rft" / "rollout" / "lineage.jsonl").read_text().splitlines()
    keys = {(json.loads(x)["sample"]["problem"]["id"], json.loads(x)["sample"]["sample_index"]) for x in lines}
    assert len(lines) == len(keys) == 8 * 3


def _check_placement(seen: dict) -> None:
    node_of = {res: n["id"] for n in seen["nodes"] for res in (*HEAD, *WORKER) if res in n["resources"]}
    assert node_of["sampler_node"] == node_of["learner_node"] != node_of["buffer_node"] == node_of["critic_node"]
    placed: dict[str, set] = {}
    for a in seen["actors"]:
        placed.setdefault(a["cls"], set()).add(a["node"])
    assert placed["SamplerWorker"] == {node_of["sampler_node"]}
    assert placed["CriticWorker"] == {node_of["critic_node"]}
    assert placed["Buffer"] == {node_of["buffer_node"]}
    assert placed["RayTrainWorker"] == {node_of["learner_node"]}
