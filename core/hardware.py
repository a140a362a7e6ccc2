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
