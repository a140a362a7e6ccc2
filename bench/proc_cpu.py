"""CPU seconds per process kind while a block of code runs, from /proc (Linux).

A learner start or an engine start is several processes (Ray's helper actors, workers,
engine cores); which of them cost what is what decides where CI time can be saved. A thread
reads every process's CPU time a few times a second and keeps the last value it saw of each,
so a process that ends between two reads loses at most that interval. Processes that existed
before the block count only what they used during it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def kind(cmdline: str) -> str:
    """A short name for a process: Ray's title (`ray::TrainController`), else the program's name."""
    if cmdline.startswith("ray::"):
        return cmdline.split()[0].split(".")[0]  # "ray::SamplerWorker.__init__" is still a SamplerWorker
    words = cmdline.split()
    if not words:
        return "?"
    prog = Path(words[0]).name
    args = words[1:]
    while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):  # interpreter options
        args = args[2:] if args[0] in ("-W", "-X") else args[1:]
    if not prog.startswith("python") or not args:
        return prog
    if args[0] == "-m" and len(args) > 1:
        return args[1]
    if args[0] == "-c":
        return "python -c " + " ".join(args[1:])[:40]
    return Path(args[0]).name


def _read_all() -> dict[int, tuple[str, float]]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        out[int(entry)] = (cmd, (int(fields[11]) + int(fields[12])) / TICK)  # utime + stime
    return out


class ProcessCPU:
    """with ProcessCPU() as p: ...; p.by_kind() -> {kind: CPU seconds}, largest first."""

    def __init__(self, every_s: float = 0.2):
        self.every_s = every_s
        self._stop = threading.Event()
        self._base: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}

    def __enter__(self) -> "ProcessCPU":
        self._base = {pid: cpu for pid, (_, cpu) in _read_all().items()}
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while True:
            for pid, (cmd, cpu) in _read_all().items():
                old = self._last.get(pid, ("", 0.0))[0]
                self._last[pid] = (cmd or old, cpu)  # a process on its way out has an empty cmdline
            if self._stop.wait(self.every_s):
                return

    def by_kind(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for pid, (cmd, cpu) in self._last.items():
            used, name = cpu - self._base.get(pid, 0.0), kind(cmd)
            if used > 0:
                totals[name] = totals.get(name, 0.0) + used
        return {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
