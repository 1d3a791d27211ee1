"""Where the gateway's worker processes keep one shared truth about each tier's warmth.

One record per tier (:class:`WarmthRecord`) holds the stored state, the last success, the
learned cold-start mean and the warm-up lease. A store offers three async calls, and
``update`` is the only way to write: it applies a pure function to the current record
atomically, so taking the lease and entering ``warming`` is one step no other worker can
split::

    store = SqliteStore(Path("/run/gateway/warmth.db"))   # every worker opens the same file
    record = await store.update("prod", lambda old: msgspec.structs.replace(old, ...))
    await store.aclose()

``MemoryStore`` serves one process and tests; ``SqliteStore`` serves the worker processes
of one machine; ``gateway.warmth.redis_store.RedisStore`` (``update`` as WATCH/MULTI) serves
several machines through the same :class:`WarmStore` protocol.

Why the lease lives in the tier's row rather than in a table of its own: the lease and the
``warming`` state must change together; one row changed in one transaction cannot be seen
half-done by another worker.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import msgspec
from msgspec.structs import replace

from gateway.warmth.types import TierWarmthConfig, WarmthState

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5_000  # a transaction here takes well under 1 ms; 5 s means a hang
SCHEMA_VERSION = 1


class WarmthRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One tier's warmth as stored, shared by every worker (and replica): the row the state
    machine's changes below rewrite. Times are wall-clock epoch seconds, the only clock
    worker processes (and machines) share."""

    state: WarmthState
    since: float  # when ``state`` was entered (for ``warming``: when the warm-up began)
    last_success: float | None = None
    last_latency_s: float | None = None
    last_error: str | None = None
    failures: int = 0  # consecutive failures; a success resets it
    warmups: int = 0  # warm-ups that observed a cold start
    mean_cold_start_s: float | None = None  # None: not learned yet, use the configured seed
    lease_owner: str | None = None  # the worker running the warm-up (or a down tier's trial)
    lease_expires: float | None = None
    # While down (and through the warm-ups that try it): since when, when it may next be
    # tried, and how many trials were started since it went down (the backoff's exponent).
    down_since: float | None = None
    retry_at: float | None = None
    trials: int = 0

    def lease_held(self, now: float) -> bool:
        return self.lease_owner is not None and (self.lease_expires or 0.0) > now


Change = Callable[[WarmthRecord | None], WarmthRecord]
T = TypeVar("T")


class WarmStore(Protocol):
    """The shared store. Implementations must make ``update`` atomic across all workers."""

    async def load(self, tier: str) -> WarmthRecord | None: ...

    async def load_all(self) -> dict[str, WarmthRecord]: ...

    async def update(self, tier: str, change: Change) -> WarmthRecord:
        """Apply ``change`` to the current record (None if there is none) and store the
        result, with no other write in between. ``change`` must be pure: a store may call it
        again when it retries."""
        ...

    async def aclose(self) -> None: ...


class MemoryStore:
    """One process (and tests): a dict. Never yields to the event loop, so tests built on it
    are deterministic."""

    def __init__(self, records: Mapping[str, WarmthRecord] | None = None) -> None:
        self._records: dict[str, WarmthRecord] = dict(records or {})

    async def load(self, tier: str) -> WarmthRecord | None:
        return self._records.get(tier)

    async def load_all(self) -> dict[str, WarmthRecord]:
        return dict(self._records)

    async def update(self, tier: str, change: Change) -> WarmthRecord:
        record = change(self._records.get(tier))
        self._records[tier] = record
        return record

    async def aclose(self) -> None:
        return None


class SqliteStore:
    """The worker processes of one machine share one SQLite file.

    Every call runs on one dedicated thread that owns the connection, so the event loop never
    blocks on the file and the connection is never shared between threads. WAL lets readers
    run beside the writer; ``synchronous=NORMAL`` means a commit does not fsync (only
    checkpoints do): a power cut may lose the last state change, which the next success or
    warm-up re-learns. The tracker reads through a short cache and writes only on state
    changes, so a request on a warm tier normally touches no file at all.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warmstore")
        self._conn: sqlite3.Connection | None = None

    async def load(self, tier: str) -> WarmthRecord | None:
        return await self._run(lambda conn: self._select(conn, tier))

    async def load_all(self) -> dict[str, WarmthRecord]:
        return await self._run(self._select_all)

    async def update(self, tier: str, change: Change) -> WarmthRecord:
        def transaction(conn: sqlite3.Connection) -> WarmthRecord:
            # IMMEDIATE takes the write lock before the read: no other worker can change the
            # row between our read and our write, and no lock upgrade can deadlock.
            conn.execute("BEGIN IMMEDIATE")
            try:
                old = self._select(conn, tier)
                record = change(old)
                if record is old:  # nothing changed (a follower looking at a lease): no write
                    conn.execute("COMMIT")
                    return record
                conn.execute(
                    "INSERT INTO tier_warmth (tier, record) VALUES (?, ?) "
                    "ON CONFLICT (tier) DO UPDATE SET record = excluded.record",
                    (tier, msgspec.json.encode(record)),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return record

        return await self._run(transaction)

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._run(lambda conn: conn.close())
            self._conn = None
        self._executor.shutdown(wait=True)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connection()))

    def _connection(self) -> sqlite3.Connection:
        # Opened lazily on the store's own thread, the only thread that ever uses it.
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            # Workers opening a fresh file at once each hold a shared lock and want an
            # exclusive one to switch it to WAL: SQLite answers that deadlock with "database
            # is locked" at once, never waiting busy_timeout (1 run in 10 of the race in
            # tests/unit/test_warmstore.py). A lock beside the file makes the set-up one
            # worker's at a time; it is held for milliseconds, once per worker.
            with open(f"{self._path}.setup-lock", "a") as setup:
                fcntl.flock(setup, fcntl.LOCK_EX)  # released when the file closes
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS tier_warmth "
                    "(tier TEXT PRIMARY KEY, record BLOB NOT NULL)"
                )
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._conn = conn
        return self._conn

    def _select(self, conn: sqlite3.Connection, tier: str) -> WarmthRecord | None:
        row = conn.execute("SELECT record FROM tier_warmth WHERE tier = ?", (tier,)).fetchone()
        return None if row is None else decode_record(tier, row[0])

    def _select_all(self, conn: sqlite3.Connection) -> dict[str, WarmthRecord]:
        records = {}
        for tier, raw in conn.execute("SELECT tier, record FROM tier_warmth"):
            record = decode_record(tier, raw)
            if record is not None:
                records[tier] = record
        return records


# -- the record changes: pure, so a store may apply them again when it retries -------------


def next_trial_at(cfg: TierWarmthConfig, record: WarmthRecord) -> float:
    """When a down tier may next be tried (a record written before ``retry_at`` existed:
    ``down_retry_after_s`` after it went down)."""
    if record.retry_at is not None:
        return record.retry_at
    return record.since + cfg.down_retry_after_s


def _still_down(
    cfg: TierWarmthConfig, record: WarmthRecord, now: float, error: str
) -> WarmthRecord:
    """A trial (or a warm-up) of a tier failed: down since it first went down, tried again
    after the backoff its trials have earned."""
    down_since = record.down_since if record.down_since is not None else now
    return replace(
        record,
        state="down",
        since=down_since,
        down_since=down_since,
        retry_at=now + cfg.down_backoff_s(record.trials),
        last_error=error,
    )


_RECOVERED = {"down_since": None, "retry_at": None, "trials": 0}


def effective(cfg: TierWarmthConfig, record: WarmthRecord, now: float) -> WarmthRecord:
    """The stored record with the presumptions applied: scale-down, and dead warm-ups."""
    if (
        record.state == "warm"
        and cfg.scales_to_zero
        and record.last_success is not None
        and now - record.last_success > cfg.scaledown_window_s
    ):
        return replace(record, state="cold", since=record.last_success + cfg.scaledown_window_s)
    if record.state == "warming" and not record.lease_held(now) and record.down_since is not None:
        # A trial warm-up of a down tier whose worker is gone: still down, tried again now.
        expired = record.lease_expires or record.since
        return replace(record, state="down", since=record.down_since, retry_at=expired)
    if record.state == "warming" and not record.lease_held(now):
        # The worker warming it is gone; nothing is known to be booting any more.
        presumed: WarmthState = "cold" if cfg.scales_to_zero else "unknown"
        return replace(record, state=presumed, since=record.lease_expires or record.since)
    return record


def claimed(
    cfg: TierWarmthConfig, initial: WarmthRecord, now: float, owner: str, ttl_s: float
) -> Change:
    """Take the warm-up lease unless another worker holds it or the tier is down and was
    retried too recently; the result says which (``lease_owner``). A warm tier stays warm
    (a touch); any other enters ``warming`` now."""

    def change(old: WarmthRecord | None) -> WarmthRecord:
        record = effective(cfg, old or initial, now)
        if record.state == "down" and (now < next_trial_at(cfg, record) or record.lease_held(now)):
            return old or record  # tried too recently, or its trial is under way
        if record.lease_held(now) and record.lease_owner != owner:
            return old or record
        warming = record.state != "warm"
        return replace(
            record,
            state="warming" if warming else record.state,
            since=now if warming else record.since,
            lease_owner=owner,
            lease_expires=now + ttl_s,
            trials=record.trials + (record.state == "down"),  # this warm-up is a trial
        )

    return change


def trial_claimed(cfg: TierWarmthConfig, now: float, owner: str, ttl_s: float) -> Change:
    """Take a down tier's trial (a circuit breaker's half-open state) if it is due and no
    other is under way: the tier stays ``down`` while ``owner`` holds the lease for
    ``ttl_s``, so exactly one probe or request tries it. The result says who won
    (``lease_owner``); a trial ends with ``warmed``/``succeeded`` or
    ``trial_failed``/``failed``, or its lease expires (the next trial may then start)."""

    def change(old: WarmthRecord | None) -> WarmthRecord:
        record = effective(cfg, old or WarmthRecord(state="unknown", since=now), now)
        if record.state != "down" or record.lease_held(now) or now < next_trial_at(cfg, record):
            return old or record
        return replace(
            record, trials=record.trials + 1, lease_owner=owner, lease_expires=now + ttl_s
        )

    return change


def trial_failed(cfg: TierWarmthConfig, now: float, error: str, owner: str) -> Change:
    """``owner``'s trial of a down tier failed: down again, for a longer backoff."""

    def change(old: WarmthRecord | None) -> WarmthRecord:
        record = effective(cfg, old or WarmthRecord(state="unknown", since=now), now)
        if record.lease_owner != owner or record.state != "down":
            return old or record  # the trial's lease expired and passed on; not ours to end
        return release(_still_down(cfg, record, now, error), owner)

    return change


def trial_ended(cfg: TierWarmthConfig, now: float) -> Change:
    """A down tier's trial ended with no verdict (the tier answered 4xx to a request that was
    at fault, the client hung up, shutdown): its lease is given back, it does not count, and
    the next trial may start at once."""

    def change(old: WarmthRecord | None) -> WarmthRecord:
        record = effective(cfg, old or WarmthRecord(state="unknown", since=now), now)
        if record.state != "down" or not record.lease_held(now):
            return old or record
        return replace(
            record,
            lease_owner=None,
            lease_expires=None,
            retry_at=now,
            trials=max(0, record.trials - 1),
        )

    return change


def succeeded(cfg: TierWarmthConfig, now: float, latency_s: float) -> Change:
    def change(old: WarmthRecord | None) -> WarmthRecord:
        record = effective(cfg, old or WarmthRecord(state="unknown", since=now), now)
        if record.state == "down":  # the trial request (or one sent before) answered
            record = replace(record, lease_owner=None, lease_expires=None)
        return replace(
            record,
            state="warm",
            since=record.since if record.state == "warm" else now,
            last_success=max(now, record.last_success or now),
            last_latency_s=latency_s,
            failures=0,
            **_RECOVERED,
        )

    return change


def failed(
    cfg: TierWarmthConfig, now: float, error: str, seen_success: float | None = None
) -> Change:
    """A request to the tier failed. Down at the ``failures_to_down``-th failure in a row,
    but only if the tier has not answered for ``down_after_silence_s``: an outage fails every
    call, a mostly-working tier under load answers between its failures. ``seen_success`` is
    the caller's own last success, which may not be stored yet (``record_success`` writes a
    warm tier's successes at most every ``success_write_interval_s``)."""

    def change(old: WarmthRecord | None) -> WarmthRecord:
        record = effective(cfg, old or WarmthRecord(state="unknown", since=now), now)
        if seen_success is not None and seen_success > (record.last_success or 0.0):
            record = replace(record, last_success=seen_success)
        failures = record.failures + 1
        if record.state == "down" and record.lease_held(now):
            # The trial request failed (a request sent before the tier went down may end
            # the trial early too; it failed on the same tier).
            return replace(
                _still_down(cfg, record, now, error),
                failures=failures,
                lease_owner=None,
                lease_expires=None,
            )
        # While warming, the warm-up decides: requests held by a booting tier may time out.
        silent = (
            record.last_success is None or now - record.last_success >= cfg.down_after_silence_s
        )
        to_down = (
            record.state not in ("warming", "down") and failures >= cfg.failures_to_down and silent
        )
        if to_down:
            return replace(
                record,
                state="down",
                since=now,
                down_since=now,
                retry_at=now + cfg.down_backoff_s(0),
                trials=0,
                last_error=error,
                failures=failures,
            )
        return replace(record, last_error=error, failures=failures)

    return change


def warmed(cfg: TierWarmthConfig, now: float, elapsed_s: float, owner: str) -> Change:
    def change(old: WarmthRecord | None) -> WarmthRecord:
        record = effective(cfg, old or WarmthRecord(state="unknown", since=now), now)
        learned = elapsed_s >= cfg.already_warm_below_s
        mean = record.mean_cold_start_s or cfg.expected_cold_start_s
        return release(
            replace(
                record,
                state="warm",
                since=record.since if record.state == "warm" else now,
                last_success=max(now, record.last_success or now),
                failures=0,
                **_RECOVERED,
                warmups=record.warmups + learned,
                mean_cold_start_s=(
                    cfg.ewma_alpha * elapsed_s + (1 - cfg.ewma_alpha) * mean
                    if learned
                    else record.mean_cold_start_s
                ),
            ),
            owner,
        )

    return change


def gave_up(cfg: TierWarmthConfig, now: float, last_error: str, owner: str) -> Change:
    def change(old: WarmthRecord | None) -> WarmthRecord:
        record = old or WarmthRecord(state="unknown", since=now)
        error = (
            f"not healthy within the {cfg.startup_timeout_s:.0f} s startup timeout ({last_error})"
        )
        return release(_still_down(cfg, record, now, error), owner)

    return change


def abandoned(cfg: TierWarmthConfig, now: float, owner: str) -> Change:
    """A warm-up stopped half-way (shutdown): give the lease back at once, presume as before."""

    def change(old: WarmthRecord | None) -> WarmthRecord:
        record = old or WarmthRecord(state="unknown", since=now)
        if record.lease_owner != owner:
            return record
        if record.state == "warming" and record.down_since is not None:
            # A trial cut short: still down, and the next trial may start at once.
            record = replace(record, state="down", since=record.down_since, retry_at=now)
        elif record.state == "warming":
            presumed: WarmthState = "cold" if cfg.scales_to_zero else "unknown"
            record = replace(record, state=presumed, since=now)
        return release(record, owner)

    return change


def went_cold(since: float, owner: str) -> Change:
    """A touch of a warm tier went unanswered: it is booting again, since the touch began."""

    def change(old: WarmthRecord | None) -> WarmthRecord:
        record = old or WarmthRecord(state="unknown", since=since)
        if record.lease_owner != owner or record.state != "warm":
            return record
        return replace(record, state="warming", since=since)

    return change


def release(record: WarmthRecord, owner: str) -> WarmthRecord:
    if record.lease_owner != owner:
        return record  # the lease went to another worker meanwhile: theirs to release
    return replace(record, lease_owner=None, lease_expires=None)


def decode_record(tier: str, raw: bytes) -> WarmthRecord | None:
    # A record an older or newer gateway wrote is worth less than a fresh start: the state is
    # re-learned from the next success or warm-up, so an unreadable row is dropped, not fatal.
    try:
        return msgspec.json.decode(raw, type=WarmthRecord)
    except msgspec.DecodeError:
        log.warning("warmth store: unreadable record for tier %r ignored", tier)
        return None
