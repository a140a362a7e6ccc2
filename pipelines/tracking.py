"""Metrics: W&B (online with a key, offline otherwise) plus a local metrics.jsonl.

The API key is read by wandb itself from the environment; we only test whether one
is present and never print, log or write it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN", "RAY_AUTH_TOKEN")


def redact(text: str) -> str:
    for name in SECRET_ENV:
        val = os.environ.get(name)
        if val and len(val) >= 8:
            text = text.replace(val, "***")
    return text


class Tracker:
    def __init__(self, run_dir: Path, config: dict, enabled: bool, project: str, name: str,
                 group: str | None = None):
        self.path = run_dir / "metrics.jsonl"
        self._lock = threading.Lock()
        self._step = 0
        self.run = None
        self.mode = "disabled"
        self.prefix = ""  # "round2/" while round 2 runs: one W&B run, one key space per round
        if enabled:
            import wandb

            has_key = bool(os.environ.get("WANDB_API_KEY"))
            self.mode = "offline" if os.environ.get("WANDB_MODE") == "offline" or not has_key else "online"
            os.environ.setdefault("WANDB_SILENT", "true")
            wdir = run_dir / "wandb"
            wdir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=project, name=name or run_dir.name, dir=str(wdir), config=config,
                                  mode=self.mode, resume="allow", id=_stable_id(run_dir), group=group)

    def log(self, metrics: dict[str, Any]) -> None:
        clean = {self.prefix + k: v for k, v in metrics.items()
                 if isinstance(v, (int, float, str, bool)) or v is None}
        with self._lock:
            self._step += 1
            with self.path.open("a") as fh:
                fh.write(json.dumps(clean) + "\n")
            if self.run is not None:
                self.run.log(clean)

    def histogram(self, name: str, values: list[float]) -> None:
        if self.run is not None and values:
            import wandb

            self.run.log({self.prefix + name: wandb.Histogram(values)})

    def table(self, name: str, columns: list[str], rows: list[list]) -> None:
        if self.run is not None and rows:
            import wandb

            self.run.log({self.prefix + name: wandb.Table(columns=columns, data=rows)})

    def summary(self, values: dict) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _stable_id(run_dir: Path) -> str:
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
