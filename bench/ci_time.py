"""Time what CI does: a fresh clone of HEAD, then `.ci/run` (set-up included), on this machine.

    ./dev bench ci_time            # writes bench/results/ci_time.json

The clone gets its own venv and model cache, as on a clean CI machine, and uv (which installs
the stack) a fresh, empty download cache. pip's download cache (~/.cache/pip, now only pip and uv
themselves) is the one thing shared, and the result says whether it was warm. Set-up is run first on
its own, so its seconds are recorded apart; .ci/run then finds it done and runs the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, gemm_peak_gflops, machine, write_result


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def slowest(log: str, n: int = 15) -> list[dict]:
    """pytest's --durations lines ("12.34s call  tests/...::name"), slowest first."""
    rows = [{"seconds": float(m[1]), "phase": m[2], "test": m[3]}
            for m in re.finditer(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)", log, re.M)]
    return sorted(rows, key=lambda r: -r["seconds"])[:n]


def main() -> int:
    pip_cache = Path.home() / ".cache" / "pip"
    # A sibling of this checkout, as CI's clone is: tests read the shared data at ../shared.
    clone = Path(tempfile.mkdtemp(prefix="ci-time-", dir=ROOT.parent))
    uv_cache = Path(tempfile.mkdtemp(prefix="ci-time-uv-"))  # uv's download cache, cold as on a fresh CI machine
    head = commit()  # what the clone gets; HEAD here may move while the suite runs
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = dict(os.environ, UV_CACHE_DIR=str(uv_cache))
        gemm_before = gemm_peak_gflops()
        t0 = time.time()
        setup = subprocess.run([str(clone / "dev"), "setup"], cwd=clone, env=env, capture_output=True, text=True)
        setup_s = time.time() - t0
        res = subprocess.run([str(clone / ".ci" / "run")], cwd=clone, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        gemm_after = gemm_peak_gflops()
    finally:
        shutil.rmtree(clone, ignore_errors=True)
        shutil.rmtree(uv_cache, ignore_errors=True)
    log = setup.stdout + setup.stderr + res.stdout + res.stderr
    kept = Path(tempfile.mkstemp(prefix="ci-time-", suffix=".log")[1])
    kept.write_text(log)
    print(f"the suite's whole output: {kept}", file=sys.stderr)
    summary = [x for x in log.splitlines() if re.search(r"\d+ (passed|failed)", x)]
    failures = [x for x in res.stdout.splitlines() if x.startswith(("FAILED ", "ERROR "))]
    write_result("ci_time", {
        "what": "fresh clone of HEAD, then .ci/run (./dev test: set-up and the whole suite)",
        "commit": head, "machine": machine(), "wall_seconds": round(wall, 1), "minutes": round(wall / 60, 2),
        "setup_seconds": round(setup_s, 1), "uv_download_cache": "cold (a fresh directory)",
        "returncode": res.returncode, "pytest_summary": summary[-1] if summary else None, "failures": failures,
        "slowest": slowest(log), "pip_download_cache_warm": pip_cache.is_dir() and any(pip_cache.iterdir()),
        "gemm_gflops_before_after": [round(gemm_before, 1), round(gemm_after, 1)]})
    if res.returncode:  # pytest's own report is on stdout; set-up's noise is on stderr
        print(res.stdout[-8000:] or res.stderr[-5000:], file=sys.stderr)
    return res.returncode


if __name__ == "__main__":
    sys.exit(main())
