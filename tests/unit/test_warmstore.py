"""The shared warmth store: both implementations behave alike, and worker processes on one
SQLite file run one warm-up between them and survive a worker killed mid-warm-up.

The cross-process tests start real Python processes, which talk with the test over pipes;
the worker that takes over a dead one's lease runs on a ManualClock."""

from __future__ import annotations

import asyncio
import json
import os
import select
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
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
# Each worker tells the test what it is doing on stdout and waits for the test's word on
# stdin: the test never guesses from the time that a process got somewhere.

WORKER = """
import asyncio, json, os, sys
from pathlib import Path
from gateway.warmth.store import SqliteStore
from gateway.warmth.tracker import WarmthTracker
from gateway.warmth.types import TierWarmthConfig

db, mode = Path(sys.argv[1]), sys.argv[2]
owner = f"worker-{os.getpid()}"
config = TierWarmthConfig(kind="modal", scales_to_zero=True, scaledown_window_s=900,
                          expected_cold_start_s=424, startup_timeout_s=30)

def say(line):
    print(line, flush=True)

async def heard():
    return (await asyncio.to_thread(sys.stdin.readline)).strip()

class Store(SqliteStore):
    following = False

    async def load(self, tier):  # says when it finds another worker's warm-up under way
        record = await super().load(tier)
        held = record is not None and record.lease_owner not in (None, owner)
        if held and not self.following:
            self.following = True
            say("following")
        return record

async def probe():
    say("probing")
    if mode == "hang":
        await asyncio.Event().wait()  # killed here, holding the lease
    return await heard() == "booted"  # a Modal boot holds the request until the test says

async def main():
    store = Store(db)
    # The workers' own waits are real (they share no clock): a follower re-reads the store
    # every 50 ms, as `poll_interval_s` makes it in production every second.
    tracker = WarmthTracker({"prod": config}, store, poll_interval_s=0.05, owner=owner)
    say("ready")
    assert await heard() == "go"
    state = await tracker.warm_up("prod", probe)
    say(json.dumps({"pid": os.getpid(), "state": state.state}))
    await tracker.aclose()
    await store.aclose()

asyncio.run(main())
"""
SILENCE_S = 60.0  # only a broken worker is silent this long: a bound for failing, not a wait


def start_worker(tmp_path: Path, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tmp_path / "warmth.db"), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,  # unbuffered: select() sees every line the moment it is written
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def said(worker: subprocess.Popen[bytes]) -> str:
    """The worker's next line."""
    assert worker.stdout is not None
    readable, _, _ = select.select([worker.stdout], [], [], SILENCE_S)
    assert readable, f"worker {worker.pid} said nothing for {SILENCE_S:.0f} s"
    line = worker.stdout.readline()
    assert line, f"worker {worker.pid} exited ({worker.wait()})"
    return line.decode().strip()


def tell(worker: subprocess.Popen[bytes], word: str) -> None:
    assert worker.stdin is not None
    worker.stdin.write(f"{word}\n".encode())


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for worker in started:  # a failed test leaves none behind
        if worker.poll() is None:
            worker.kill()
        worker.communicate()


def test_two_worker_processes_race_and_one_warms(tmp_path, workers):
    workers += [start_worker(tmp_path, "normal") for _ in range(2)]
    # Both are imported and waiting before either may start: a real race.
    assert [said(w) for w in workers] == ["ready", "ready"]
    for worker in workers:
        tell(worker, "go")
    # One probes and holds its lease (the boot takes as long as the test wants); the other
    # finds that warm-up under way and waits on it: it does not probe a second time.
    roles = {said(w): w for w in workers}
    assert set(roles) == {"probing", "following"}
    tell(roles["probing"], "booted")
    results = [json.loads(said(w)) for w in workers]
    assert {r["state"] for r in results} == {"warm"}
    assert {r["pid"] for r in results} == {w.pid for w in workers}
    assert [w.wait() for w in workers] == [0, 0]


async def test_a_killed_workers_lease_expires_and_another_takes_over(tmp_path, workers):
    crashed = start_worker(tmp_path, "hang")
    workers.append(crashed)
    assert said(crashed) == "ready"
    tell(crashed, "go")
    assert said(crashed) == "probing"  # the lease is taken and the warm-up under way
    crashed.kill()
    crashed.wait()

    store = SqliteStore(tmp_path / "warmth.db")
    left = await store.load("prod")
    assert left is not None and left.lease_expires is not None
    assert (left.state, left.lease_owner is not None) == ("warming", True)
    # The next worker's clock starts as the dead one last renewed its lease, and moves only
    # when the test moves it.
    lease_ttl_s, poll_s = 30.0, 1.0  # the production defaults
    clock = ManualClock(datetime.fromtimestamp(left.lease_expires - lease_ttl_s, UTC))
    tracker = WarmthTracker(
        {"prod": PROD}, store, clock, lease_ttl_s=lease_ttl_s, poll_interval_s=poll_s
    )
    probes: list[float] = []

    async def probe() -> bool:
        probes.append(clock.time())
        return True

    warm_up = asyncio.create_task(tracker.warm_up("prod", probe))
    while not probes:
        # the tracker waits (on the clock) for the lease to be released or to expire
        parked = asyncio.ensure_future(clock.parked())
        await asyncio.wait({warm_up, parked}, return_when=asyncio.FIRST_COMPLETED)
        parked.cancel()
        if probes or warm_up.done():
            break
        await clock.advance(poll_s)
    state = await warm_up
    assert state.state == "warm"
    assert len(probes) == 1
    # not while the lease was held; within one poll of its expiry
    assert left.lease_expires <= probes[0] <= left.lease_expires + poll_s
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
