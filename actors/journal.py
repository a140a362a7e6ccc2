"""Append-only JSONL files in the run directory (lineage, decisions, deliverables, acks).

A resumed run trusts these files, so an append lands whole or not at all: a write that
fails part-way (disk full, quota, a read-only remount) is cut back to where it started
and raised as a RunDirWriteError naming the file. A torn last line left by a crash in
the middle of a write is cut off when the file is next opened, before anything is
appended behind it (which would bury it mid-file, where a reader cannot skip it).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("selfcritique")


class RunDirWriteError(RuntimeError):
    """A run-directory write failed; the message names the file and how to resume."""


def describe_write_error(path: Path | str, err: OSError, what: str) -> str:
    name = errno.errorcode.get(err.errno or 0, "") if err.errno else ""
    return (f"{path}: cannot write {what}: {err.strerror or err} ({name or type(err).__name__}). "
            "Nothing written was half-kept; free space (or make the directory writable) and rerun "
            "the same command to resume.")


def repair_torn_tail(path: Path) -> int:
    """Cut a last line that has no newline (a write cut short by a crash); returns bytes cut."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            chunk = fh.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                return 0
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        fh.truncate(keep)
    log.warning("%s: cut a torn last line (%d bytes) left by an interrupted write", path, size - keep)
    return size - keep


class Journal:
    """One writer's append-only JSONL file; every append is whole or absent."""

    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.repaired_bytes = repair_torn_tail(path)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirWriteError(describe_write_error(path, e, "open for appending")) from e

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        data = memoryview("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
        start = os.fstat(self._fd).st_size
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as e:
            self._cut_back(start)
            raise RunDirWriteError(describe_write_error(self.path, e, f"{len(rows)} rows")) from e

    def _cut_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)  # shrinking needs no free space
        except OSError:
            pass  # e.g. remounted read-only: the torn tail is cut when the file is next opened

    @staticmethod
    def read(path: Path) -> list[dict]:
        """Every whole row. A torn last line is skipped; a bad line anywhere else is an error."""
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").split("\n")
        out = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                if i == len(lines):  # no newline after it: a write cut short
                    break
                raise ValueError(f"{path}:{i}: not a JSON row ({e.msg}); only the last line can be torn "
                                 "by an interrupted write, so something else changed this file") from e
        return out
