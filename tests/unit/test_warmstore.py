"""The shared warmth store: both implementations behave alike, and worker processes on one
SQLite file run one warm-up between them and survive a worker killed mid-warm-up.

The cross-process tests start real Python processes and use the real clock (a second or
two each): a ManualClock cannot be shared between processes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

import gateway
from gateway.clock import ManualClock
from gateway.warmth.store import MemoryStore, SqliteStore, WarmStore, WarmthRecord, failed
from gateway.warmth.tracker import WarmthTracker
from gateway.warmth.types import TierWarmthConfig

REPO = Path(gateway.__file__).resolve().parent.parent

PROD = TierWarmthConfig(
    kind="modal",
    scales_to_zero=True,
    scaledown_window_s=900,
    expected_cold_start_s=424,
    startup_timeout_s=30,
)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path) -> AsyncIterator[WarmStore]:
    store: WarmStore = (
        MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "w.db")
    )
    yield store
    await store.aclose()


async def test_update_sees_the_previous_record(store):
    assert await store.load("prod") is None
    seen: list[WarmthRecord | None] = []

    def change(old: WarmthRecord | None) -> WarmthRecord:
        seen.append(old)
        base = old or WarmthRecord(state="cold", since=1.0)
        return msgspec.structs.replace(base, failures=base.failures + 1)

    await store.update("prod", change)
    second = await store.update("prod", change)
    assert seen[0] is None
    assert seen[1] == WarmthRecord(state="cold", since=1.0, failures=1)
    assert second.failures == 2
    assert await store.load("prod") == second
    assert await store.load_all() == {"prod": second}


async def test_a_failing_change_leaves_the_record_as_it_was(store):
    record = await store.update("dev", lambda _: WarmthRecord(state="warm", since=5.0))

    def broken(old: WarmthRecord | None) -> WarmthRecord:
        raise RuntimeError("bug in a change")

    with pytest.raises(RuntimeError):
        await store.update("dev", broken)
    assert await store.load("dev") == record


async def test_sqlite_records_outlive_the_store_and_use_wal(tmp_path):
    path = tmp_path / "warmth.db"
    first = SqliteStore(path)
    written = await first.update("prod", lambda _: WarmthRecord(state="warm", since=7.0))
    await first.aclose()
    second = SqliteStore(path)
    assert await second.load("prod") == written
    await second.aclose()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_sqlite_ignores_a_record_it_cannot_read(tmp_path):
    path = tmp_path / "warmth.db"
    store = SqliteStore(path)
    await store.update("dev", lambda _: WarmthRecord(state="warm", since=1.0))
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("UPDATE tier_warmth SET record = ? WHERE tier = 'dev'", (b'{"state": 3}',))
    assert await store.load("dev") is None
    assert await store.load_all() == {}
    await store.aclose()


# -- real worker processes -------------------------------------------------------------------

WORKER = """
import asyncio, json, os, sys, time
from pathlib import Path
from gateway.warmth.store import SqliteStore
from gateway.warmth.tracker import WarmthTracker
from gateway.warmth.types import TierWarmthConfig

db, go, log, mode = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
config = TierWarmthConfig(kind="modal", scales_to_zero=True, scaledown_window_s=900,
                          expected_cold_start_s=424, startup_timeout_s=30)

async def probe() -> bool:
    with log.open("a") as f:
        f.write(f"{os.getpid()}\\n")
    await asyncio.sleep(3600 if mode == "hang" else 1.0)  # a Modal boot holds the request
    return True

async def main() -> None:
    store = SqliteStore(db)
    tracker = WarmthTracker({"prod": config}, store, lease_ttl_s=1.5, poll_interval_s=0.05)
    (go.parent / f"ready-{os.getpid()}").touch()
    while not go.exists():
        await asyncio.sleep(0.01)
    state = await tracker.warm_up("prod", probe)
    print(json.dumps({"pid": os.getpid(), "state": state.state}), flush=True)
    await tracker.aclose()
    await store.aclose()

asyncio.run(main())
"""


def start_worker(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    args = [str(tmp_path / "warmth.db"), str(tmp_path / "go"), str(tmp_path / "probes"), mode]
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the worker processes did not get there"
        time.sleep(0.01)


def test_two_worker_processes_race_and_one_warms(tmp_path):
    workers = [start_worker(tmp_path, "normal") for _ in range(2)]
    # Both processes are imported and waiting before either may start: a real race, and a
    # late one would find the tier warm, touch it, and probe a second time.
    wait_until(lambda: len(list(tmp_path.glob("ready-*"))) == 2)
    (tmp_path / "go").touch()
    results = [json.loads(w.communicate(timeout=60)[0]) for w in workers]
    probers = (tmp_path / "probes").read_text().split()
    assert len(probers) == 1  # one probe sequence between the two processes
    assert {r["state"] for r in results} == {"warm"}
    assert {r["pid"] for r in results} == {w.pid for w in workers}


async def test_a_killed_workers_lease_expires_and_another_takes_over(tmp_path):
    crashed = start_worker(tmp_path, "hang")
    (tmp_path / "go").touch()
    wait_until(lambda: (tmp_path / "probes").exists())
    crashed.send_signal(signal.SIGKILL)
    crashed.communicate(timeout=10)

    store = SqliteStore(tmp_path / "warmth.db")
    left = await store.load("prod")
    assert left is not None
    assert (left.state, left.lease_owner is not None) == ("warming", True)
    tracker = WarmthTracker({"prod": PROD}, store, poll_interval_s=0.05)
    probes: list[float] = []

    async def probe() -> bool:
        probes.append(time.monotonic())
        return True

    started = time.monotonic()
    state = await tracker.warm_up("prod", probe)
    assert state.state == "warm"
    assert len(probes) == 1
    assert probes[0] - started < 1.5 + 1.0  # within one lease TTL (plus a poll and slack)
    taken = await store.load("prod")
    assert taken is not None
    assert taken.lease_owner is None
    await tracker.aclose()
    await store.aclose()


async def test_workers_on_one_store_let_exactly_one_trial_through(store):
    """Two workers (trackers) on the same store: a down tier's trial goes to one of them."""
    clock = ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    config = msgspec.structs.replace(PROD, down_retry_after_s=60.0)
    workers = [WarmthTracker({"prod": config}, store, clock, owner=f"w{i}") for i in range(2)]
    for _ in range(3):
        await store.update("prod", failed(config, clock.time(), "refused"))
    await clock.advance(60)
    wins = [await worker.claim_trial("prod", 180) for worker in workers for _ in range(3)]
    assert wins.count(True) == 1
    record = await store.load("prod")
    assert record is not None and (record.state, record.trials) == ("down", 1)
    for worker in workers:
        await worker.aclose()
