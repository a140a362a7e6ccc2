"""The run directory and its manifest: what finished, with which checkpoint, and its metrics.

Rerunning the same command reads the manifest, skips finished stages and lets the
interrupted one resume from its buffer lineage and its learner checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from actors.journal import describe_write_error


class StageError(RuntimeError):
    """A stage cannot go on; the message says why (the CLI prints it and exits 2)."""


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / "manifest.json"
        self.manifest: dict[str, Any] = (
            json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {"stages": {}}
        )

    def stage_dir(self, stage: str) -> Path:
        d = self.root / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def done(self, stage: str) -> dict | None:
        entry = self.manifest["stages"].get(stage)
        return entry if entry and entry.get("status") == "done" else None

    def _save(self) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.manifest, indent=2, default=str))
            os.replace(tmp, self.manifest_path)  # atomic: a crash never leaves half a manifest
        except OSError as e:  # disk full or read-only: the old manifest still stands
            raise StageError(describe_write_error(self.manifest_path, e, "the manifest")) from e

    def mark_started(self, stage: str) -> None:
        entry = self.manifest["stages"].setdefault(stage, {})
        entry.setdefault("started", time.time())
        entry["attempts"] = entry.get("attempts", 0) + 1
        entry["status"] = "running"
        self._save()

    def mark_done(self, stage: str, checkpoint: str | None, metrics: dict) -> None:
        entry = self.manifest["stages"].setdefault(stage, {})
        entry.update(status="done", finished=time.time(), checkpoint=checkpoint, metrics=metrics)
        self._save()

    def set(self, key: str, value: Any) -> None:
        self.manifest[key] = value
        self._save()
