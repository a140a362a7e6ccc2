"""actors/journal.py: appends land whole or not at all, torn tails are cut, errors name the file.

A full disk is simulated here by an os.write that writes part of its data and then
raises ENOSPC, as a real one does; tests/integration/test_faults.py fills a real tmpfs.
"""

from __future__ import annotations

import errno
import json

import pytest

from actors import journal
from actors.journal import Journal, RunDirWriteError, repair_torn_tail


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"key": f"p{i}#0", "text": "x" * 50} for i in range(start, start + n)]


def disk_fills_after(monkeypatch, room: int) -> None:
    """os.write accepts `room` more bytes in all, then fails with ENOSPC."""
    real = journal.os.write
    left = {"n": room}

    def write(fd, data):
        if left["n"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real(fd, bytes(data[:left["n"]]))
        left["n"] -= n
        return n

    monkeypatch.setattr(journal.os, "write", write)


def test_rows_round_trip(tmp_path):
    j = Journal(tmp_path / "a.jsonl")
    j.write(rows(3))
    j.write([])
    j.write(rows(2, 3))
    assert [r["key"] for r in Journal.read(tmp_path / "a.jsonl")] == [f"p{i}#0" for i in range(5)]


def test_a_write_that_fills_the_disk_is_cut_back_and_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "run" / "lineage.jsonl"
    j = Journal(path)
    j.write(rows(2))
    before = path.read_bytes()
    disk_fills_after(monkeypatch, room=70)  # part of the next batch fits, then the disk is full
    with pytest.raises(RunDirWriteError) as e:
        j.write(rows(3, 2))
    assert str(path) in str(e.value) and "ENOSPC" in str(e.value) and "rerun" in str(e.value)
    assert path.read_bytes() == before  # nothing half-kept
    monkeypatch.undo()  # space freed
    j.write(rows(3, 2))
    assert [r["key"] for r in Journal.read(path)] == [f"p{i}#0" for i in range(5)]


def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path):
    path = tmp_path / "lineage.jsonl"
    whole = "".join(json.dumps(r) + "\n" for r in rows(2))
    path.write_text(whole + '{"key": "p2#0", "te')  # a crash in the middle of a write
    assert [r["key"] for r in Journal.read(path)] == ["p0#0", "p1#0"]  # readable as it is
    Journal(path).write(rows(1, 5))
    assert [r["key"] for r in Journal.read(path)] == ["p0#0", "p1#0", "p5#0"]
    assert path.read_text().startswith(whole)


def test_repair_handles_a_file_that_is_one_torn_line_and_leaves_whole_files_alone(tmp_path):
    torn = tmp_path / "t.jsonl"
    torn.write_text('{"key": ' + "y" * 100_000)  # longer than one read-back chunk
    assert repair_torn_tail(torn) > 100_000 and torn.read_text() == ""
    whole = tmp_path / "w.jsonl"
    whole.write_text('{"a": 1}\n')
    assert repair_torn_tail(whole) == 0 and whole.read_text() == '{"a": 1}\n'
    assert repair_torn_tail(tmp_path / "missing.jsonl") == 0


def test_a_bad_line_before_the_end_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "acks.jsonl"
    path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(ValueError, match=r"acks.jsonl:2: not a JSON row"):
        Journal.read(path)


def test_a_directory_that_cannot_be_created_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirWriteError, match=str(blocker / "lineage.jsonl")):
        Journal(blocker / "lineage.jsonl")  # its parent is a file: ENOTDIR
