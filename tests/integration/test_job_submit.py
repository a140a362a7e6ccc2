"""`ray job submit` against a real `ray start --head` on loopback, with token auth left on."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_pipeline import ROOT, tiny_overrides

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head(tmp_path):
    import ray

    ray.shutdown()  # this module drives its own cluster
    port, dash = _free_port(), _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(tmp_path / "head.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
         "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         "--num-cpus=4", "--include-dashboard=true", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", dash), timeout=1):
                break
        except OSError:
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("ray head did not come up: " + (tmp_path / "head.log").read_text()[-2000:])
    yield address
    os.killpg(proc.pid, signal.SIGTERM)
    try:  # `ray start --block` sat out the whole grace every time (30 s of CI); the group dies either way
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_ray_job_submit_runs_tiny_pipeline(head, warm_tiny_model, tmp_path):
    """What is proven here is the way in (job submit, token auth, runtime_env, the job server's
    record), so the job runs RFT and eval only: the DPO stage is covered end to end by
    test_pipeline.py and across nodes by test_multinode.py."""
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(run_dir, warm_tiny_model) + ["resources.ray_address=auto", "run.stages=[rft,eval]",
                                                            "eval.mathusereval_path=''"]
    env = dict(os.environ, RAY_AUTH_MODE="token", WANDB_MODE="offline")  # the token is read from ~/.ray
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", head,
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
    status = subprocess.run([sys.executable, "-c", ask, head, job_id.group(1)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.stdout.strip().splitlines()[-1:] == ["SUCCEEDED"], status.stdout + status.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["accuracy"]) == {"base", "rft"}
