"""``gateway fixtures list | check | prune``: which cassettes are stale, which no test uses.

>>> report = inventory(Path("tests/cassettes"), max_age_s=7 * DAYS, tests=collect_tests())
>>> [e.path for e in report if e.unused]

Stale: recorded longer ago than ``--max-age`` (default a week: the field report's team
refreshed weekly). Unused: the test named in the cassette is not among the tests pytest
collects now (it was renamed or deleted); found by running ``pytest --collect-only``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.testing.cassette import Cassette, CassetteError, parse_time

MINUTES = 60
HOURS = 60 * MINUTES
DAYS = 24 * HOURS
DEFAULT_MAX_AGE = "7d"  # the field report's team refreshed fixtures weekly
COLLECT_TIMEOUT_S = 300  # collecting imports every test module of a large suite
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": MINUTES, "h": HOURS, "d": DAYS, "w": 7 * DAYS}


def parse_age(text: str) -> float:
    """``"7d"``, ``"36h"``, ``"90m"``, ``"3600"`` -> seconds."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an age such as 7d, 36h, 90m or 3600")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class Entry:
    path: Path
    test: str | None
    tiers: tuple[str, ...]
    interactions: int
    recorded_at: datetime | None
    age_s: float | None
    stale: bool
    unused: bool | None  # None: not known (collection skipped or failed)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error:
            return "unreadable"
        flags = [name for name, on in (("stale", self.stale), ("unused", self.unused)) if on]
        return ",".join(flags) or "ok"


def collect_tests(args: list[str] | None = None, *, cwd: Path | None = None) -> set[str]:
    """The node ids pytest collects now (``-m ""`` lifts any deselection in addopts)."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "", *(args or [])]
    done = subprocess.run(  # noqa: S603  # fixed argv: this interpreter's pytest
        command, cwd=cwd, capture_output=True, text=True, timeout=COLLECT_TIMEOUT_S, check=False
    )
    if done.returncode not in (0, 5):  # 5: no tests collected
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise RuntimeError("pytest --collect-only failed:\n" + "\n".join(tail))
    return {line.strip() for line in done.stdout.splitlines() if "::" in line}


def inventory(
    root: Path, *, max_age_s: float, tests: set[str] | None, now: datetime | None = None
) -> list[Entry]:
    now = now or datetime.now(UTC)
    entries = []
    for path in sorted(root.rglob("*.json")):
        try:
            cassette = Cassette.load(path)
        except CassetteError as exc:
            entries.append(Entry(path, None, (), 0, None, None, False, None, error=str(exc)))
            continue
        stamps = [parse_time(i.recorded_at) for i in cassette.interactions]
        if not stamps and cassette.recorded_at:
            stamps = [parse_time(cassette.recorded_at)]
        recorded = min(stamps) if stamps else None
        age = (now - recorded).total_seconds() if recorded else None
        tiers = tuple(sorted({i.tier for i in cassette.interactions if i.tier}))
        entries.append(
            Entry(
                path=path,
                test=cassette.test,
                tiers=tiers,
                interactions=len(cassette.interactions),
                recorded_at=recorded,
                age_s=age,
                stale=age is not None and age > max_age_s,
                unused=None if tests is None else cassette.test not in tests,
            )
        )
    return entries


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", DAYS), ("h", HOURS), ("m", MINUTES)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def render(entries: list[Entry], root: Path) -> str:
    rows = [("cassette", "test", "tiers", "n", "recorded", "age", "status")]
    for e in entries:
        rows.append(
            (
                str(e.path.relative_to(root)),
                e.test or "-",
                ",".join(e.tiers) or "-",
                str(e.interactions),
                e.recorded_at.strftime("%Y-%m-%d %H:%M") if e.recorded_at else "-",
                _age_text(e.age_s),
                e.status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def as_json(entries: list[Entry], root: Path) -> str:
    return json.dumps(
        [
            {
                "cassette": str(e.path.relative_to(root)),
                "test": e.test,
                "tiers": list(e.tiers),
                "interactions": e.interactions,
                "recorded_at": e.recorded_at.isoformat() if e.recorded_at else None,
                "age_s": None if e.age_s is None else round(e.age_s),
                "stale": e.stale,
                "unused": e.unused,
                "error": e.error,
            }
            for e in entries
        ],
        indent=2,
    )
