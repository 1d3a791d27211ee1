"""The warmth store of several machines: one Redis (or Valkey) shared by every replica.

It is a :class:`gateway.warmth.store.WarmStore`: one key per tier holds the same
:class:`WarmthRecord` JSON the SQLite store keeps in a row, so state, learned cold-start mean,
warm-up lease (with its ``lease_expires``) and keep-warm bookkeeping change together::

    store = RedisStore("redis://redis:6379/0", prefix="team-a", timeout_s=0.25)
    record = await store.update("prod", change)   # WATCH / GET / MULTI SET / EXEC, retried
    store.health()                                # StoreHealth(backend="redis", ok=True, ...)
    await store.aclose()

Keys: ``<prefix>:tier:<name>`` (the record) and ``<prefix>:tiers`` (the set of tier names,
so ``load_all`` is two round trips, never a SCAN of a Redis other teams share).

When Redis is down or slow, the gateway must go on serving: every call is bounded by
``timeout_s``, and a call that fails is answered from a local copy (the last records this
replica read or wrote, changed locally from then on). The store is then *degraded*: it says
so in :meth:`health`, counts each failure through ``on_error`` (a metric), and tries Redis
again at most every ``rejoin_after_s``, so a dead Redis costs one timeout a second, not one
per request. The first call that succeeds rejoins; records changed only locally meanwhile
are re-learned from the next success or warm-up, as after any store loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal, cast

import msgspec
from redis.exceptions import WatchError

from gateway.clock import Clock, SystemClock
from gateway.shared_redis import StoreFailure, bounded_redis
from gateway.warmth.store import Change, MemoryStore, WarmthRecord, decode_record

log = logging.getLogger(__name__)

# Three replicas racing for one tier's lease conflict at most a few times; 32 conflicts in a
# row means something writes that key in a loop, and the local copy answers instead.
MAX_WATCH_RETRIES = 32
REJOIN_AFTER_S = 1.0  # while degraded, one Redis attempt a second: cheap, and rejoins fast
MAX_ERROR_CHARS = 200


class StoreHealth(msgspec.Struct, frozen=True, kw_only=True):
    """How the shared warmth store is doing, for ``/ready``, ``/status`` and logs."""

    backend: Literal["redis", "sqlite", "memory"]
    status: Literal["ok", "degraded"]  # degraded: this replica answers from its local copy
    since: str | None = None  # ISO-8601 UTC: when the current status began (redis only)
    errors: int = 0  # store calls failed since start
    last_error: str | None = None  # the failure's class, never its text (it may hold a URL)


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "tier-gateway",
        timeout_s: float = 0.25,
        rejoin_after_s: float = REJOIN_AFTER_S,
        clock: Clock | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock or SystemClock()
        self._redis = bounded_redis(url, timeout_s)  # a failed call: the local copy answers
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._rejoin_after_s = rejoin_after_s
        self._on_error = on_error or (lambda: None)
        self._local = MemoryStore()
        self._locks: dict[str, asyncio.Lock] = {}
        self._ok = True
        self._since: float | None = self._clock.time()
        self._next_attempt = 0.0  # monotonic: while degraded, when Redis is tried again
        self._errors = 0
        self._last_error: str | None = None

    def key(self, tier: str) -> str:
        return f"{self._prefix}:tier:{tier}"

    @property
    def index_key(self) -> str:
        return f"{self._prefix}:tiers"

    def health(self) -> StoreHealth:
        return StoreHealth(
            backend="redis",
            status="ok" if self._ok else "degraded",
            since=None
            if self._since is None
            else datetime.fromtimestamp(self._since, UTC).isoformat(),
            errors=self._errors,
            last_error=self._last_error,
        )

    # -- the WarmStore protocol ----------------------------------------------------------

    async def load(self, tier: str) -> WarmthRecord | None:
        if self._skip_redis():
            return await self._local.load(tier)
        try:
            async with asyncio.timeout(self._timeout_s):
                raw = await self._redis.get(self.key(tier))
        except StoreFailure as exc:
            self._failed(exc)
            return await self._local.load(tier)
        self._succeeded()
        record = None if raw is None else decode_record(tier, raw)
        if record is not None:
            await self._local.update(tier, _replaced_by(record))
        return record

    async def load_all(self) -> dict[str, WarmthRecord]:
        if self._skip_redis():
            return await self._local.load_all()
        try:
            async with asyncio.timeout(self._timeout_s):
                # redis-py types its commands for the sync and async client at once
                members = cast("Awaitable[set[bytes]]", self._redis.smembers(self.index_key))
                names = sorted(name.decode() for name in await members)
                raws = await self._redis.mget([self.key(n) for n in names]) if names else []
        except StoreFailure as exc:
            self._failed(exc)
            return await self._local.load_all()
        self._succeeded()
        records = {}
        for name, raw in zip(names, raws, strict=True):
            record = None if raw is None else decode_record(name, raw)
            if record is not None:
                records[name] = record
                await self._local.update(name, _replaced_by(record))
        return records

    async def update(self, tier: str, change: Change) -> WarmthRecord:
        # This replica's own writes to a tier go one at a time: racing each other through
        # WATCH would only make them retry. Only other replicas' writes conflict.
        async with self._locks.setdefault(tier, asyncio.Lock()):
            if self._skip_redis():
                return await self._local.update(tier, change)
            try:
                async with asyncio.timeout(self._timeout_s):
                    record = await self._transaction(tier, change)
            except StoreFailure as exc:
                self._failed(exc)
                return await self._local.update(tier, change)
            self._succeeded()
            await self._local.update(tier, _replaced_by(record))
            return record

    async def aclose(self) -> None:
        await self._redis.aclose()

    # -- internals -----------------------------------------------------------------------

    async def _transaction(self, tier: str, change: Change) -> WarmthRecord:
        """WATCH the key, read, apply ``change``, write in MULTI/EXEC; another replica's
        write in between aborts EXEC (WatchError) and ``change``, pure, runs again."""
        key = self.key(tier)
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_WATCH_RETRIES):
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    old = None if raw is None else decode_record(tier, raw)
                    record = change(old)
                    if record is old:  # nothing changed (a follower looking at a lease)
                        await pipe.unwatch()  # type: ignore[no-untyped-call]
                        return record
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.set(key, msgspec.json.encode(record))
                    pipe.sadd(self.index_key, tier)
                    await pipe.execute()
                    return record
                except WatchError:
                    continue
        raise WatchError(f"{MAX_WATCH_RETRIES} conflicting writes in a row")

    def _skip_redis(self) -> bool:
        """While degraded, Redis is tried once per ``rejoin_after_s``; other calls go local."""
        if self._ok:
            return False
        now = self._clock.monotonic()
        if now < self._next_attempt:
            return True
        self._next_attempt = now + self._rejoin_after_s
        return False

    def _failed(self, exc: BaseException) -> None:
        self._errors += 1
        self._last_error = type(exc).__name__
        self._on_error()
        self._next_attempt = self._clock.monotonic() + self._rejoin_after_s
        if self._ok:
            self._ok, self._since = False, self._clock.time()
            log.warning(
                "warmth store: Redis unavailable (%s); serving from local state", type(exc).__name__
            )

    def _succeeded(self) -> None:
        if not self._ok:
            self._ok, self._since = True, self._clock.time()
            log.warning("warmth store: Redis is back; shared state rejoined")


def _replaced_by(record: WarmthRecord) -> Change:
    return lambda old: record
