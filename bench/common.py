"""Shared bits for the benchmark scripts: machine description and result output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SELFCRITIQUE_CACHE", str(ROOT / ".cache"))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(os.environ["SELFCRITIQUE_CACHE"]) / "torch_extensions"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def machine() -> dict:
    """core.hardware's detected machine (the same fields as the pipeline's results), plus RAM."""
    import psutil

    from core.hardware import machine_info

    return {**machine_info(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def write_result(name: str, result: dict) -> None:
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n")
    print(text)


def gemm_peak_gflops(n: int = 2048, reps: int = 10) -> float:
    """fp32 GEMM rate of this CPU (torch's BLAS, all its threads): the ceiling a step's matrix
    products meet, and a reading of how fast this session's machine is (one CPU model name
    covers machines that differ by a third)."""
    import time

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9
