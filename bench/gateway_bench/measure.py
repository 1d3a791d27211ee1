"""Measuring from outside: wrk for load and latency, /proc for CPU time and memory.

CPU time of a server = utime + stime + cutime + cstime over its whole live process tree
(workers are children; a reaped child's time lands in its parent's cutime), read before and
after a run. Memory = the sum of VmRSS over the tree (shared pages counted once per process,
so an upper bound), and VmHWM for each process's own peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
HERE = Path(__file__).resolve().parent


def tree(root: int) -> list[int]:
    """root and all its descendants, from /proc (children can be forked at any time)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found


def cpu_seconds(root: int) -> float:
    total = 0
    for pid in tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / TICK


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(root: int) -> float:
    return sum(_status_kb(pid, "VmRSS") for pid in tree(root)) / 1024


def pss_mb(root: int) -> float:
    """Proportional set size of the tree: shared pages split between the workers sharing them."""
    total = 0
    for pid in tree(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def hwm_mb(root: int) -> float:
    """Sum over the tree of each process's own peak RSS (VmHWM): >= the peak of the sum."""
    return sum(_status_kb(pid, "VmHWM") for pid in tree(root)) / 1024


@dataclass
class RssSampler:
    """Samples the tree's RSS every ``every_s`` in a thread while in a ``with`` block."""

    root: int
    every_s: float = 0.1
    peak_mb: float = 0.0
    peak_pss_mb: float = 0.0
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            value = rss_mb(self.root)
            self.samples.append(value)
            self.peak_mb = max(self.peak_mb, value)
            self.peak_pss_mb = max(self.peak_pss_mb, pss_mb(self.root))

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Load:
    script: str  # post.lua, with the body of each surface
    path: str  # /v1/chat/completions | /generate
    body: Path
    key: str = ""  # bearer token (LiteLLM's master key)


def wrk(
    url: str, load: Load, *, connections: int, duration_s: float, timeout_s: float = 10.0
) -> dict[str, float]:
    """One closed-loop wrk run; the Lua done() line, parsed, plus derived figures."""
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(HERE / load.script),
        url + load.path,
        "--",
        str(load.body),
        load.key,
    ]
    out = subprocess.run(  # bounded: wrk stops at -d, the timeout is a backstop
        argv, capture_output=True, text=True, timeout=duration_s + timeout_s + 30, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK_RESULT "))
    result: dict[str, float] = json.loads(line.split(" ", 1)[1])
    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    result["errors"] = errors
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def measured(
    root: int, run: Callable[[], dict[str, float]]
) -> tuple[dict[str, float], float, float]:
    """Run ``run()`` and return its result with the tree's CPU seconds and wall time."""
    cpu0, t0 = cpu_seconds(root), time.monotonic()
    result = run()
    return result, cpu_seconds(root) - cpu0, time.monotonic() - t0
