"""Per-key limits, counted by the ``limits`` library: requests and tokens per minute, and
GPU-seconds per day.

>>> quotas = Quotas(None)                     # in memory: one process
>>> quotas = Quotas(Secret("redis://host:6379/0"), prefix="tier-gateway")   # shared
>>> headers = await quotas.admit(record)      # raises RateLimited past a limit
>>> await quotas.charge(record, tokens=512, gpu_s=0.8)

Where the counts live is the storage URL (``limits_store`` / ``GATEWAY_LIMITS_STORE``, by
default the ``state`` Redis of the shared warmth store when there is one): in memory they
are this process's, so under ``gateway serve --workers N`` each worker counts on
its own and a key gets up to N times its limit; a ``redis://`` store is one count for every
worker and replica. ``limits`` has no file- or SQLite-backed storage to share across workers
of one machine, and a hand-written one is what the standards rule out.

Requests are counted before the request runs; tokens and GPU time are known only after the
answer, so they are charged then, in full, and a key is refused once its window is used up.
The answer that crosses a limit is served (its cost was unknown). A request is checked
against tokens and GPU time as this process last counted them (no store read per request):
with a shared store, a worker sees the other workers' charges at its own next charge, so a
used-up key may get one more request through each worker.

Each limit costs one store call per request in the steady state (an ``incr``; a window's end
is read once per window): the library's strategy objects read the window back for the
headers, a second call per limit, which put three limits at twice the CPU budget.
Windows are fixed (``limits``' fixed window): a key's window opens with its first request
(its first charge, for tokens and GPU time) and lasts a minute, or a day for GPU-seconds;
the next request after it opens the next one. A client can spend a minute's limit at the end
of one window and again at the start of the next (LiteLLM's per-minute limits behave the
same); a sliding window counter would smooth that, at twice the storage operations per
request, which took the limits past their CPU budget (bench/results/auth_hot_path.md).

The in-memory store is the library's ``MemoryStorage`` through its synchronous API (nothing
in it waits), with one change: it sweeps expired counters on a thread it starts again 10 ms
after the last one ended, whenever a counter moves, and under load that thread start (and
the GIL hand-offs it causes) cost more than all the counting (py-spy, c=16:
bench/results/auth_hot_path.md). Here the sweep is the app's to call (``sweep``, from the
gate's background task every ``SWEEP_EVERY_S``); a counter past its window reads as zero
either way (the storage checks expiry on every read). The asyncio twin is no better: it
schedules a task per write. A network store (Redis) goes through the asyncio API, so no
request blocks the loop.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.storage import MemoryStorage, storage_from_string
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from gateway.access.keys import KeyRecord
from gateway.errors import RateLimited
from gateway.settings import Secret

log = logging.getLogger("gateway.access.quotas")
Headers = list[tuple[bytes, bytes]]
STORE_FAILURES = (RedisError, OSError, TimeoutError)
GPU_MS = 1000  # GPU time is counted in milliseconds: the library counts integers
MINUTE_S, DAY_S = 60.0, 86400.0
LIMITS_SCHEMES = {
    "redis": "redis",
    "rediss": "rediss",
    "unix": "redis+unix",
}  # settings' -> limits'
SWEEP_EVERY_S = 10.0  # drops the in-memory counters of past windows (memory, not correctness)


class SweptMemoryStorage(MemoryStorage):
    """``limits``' MemoryStorage whose sweep of expired counters runs when ``sweep`` is
    called, not on a thread started after nearly every write."""

    def _MemoryStorage__schedule_expiry(self) -> None:  # the library's private hook, pinned <6
        pass

    def sweep(self) -> None:
        self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def reset_text(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``2h3m0s``."""
    total = max(1, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class Quotas:
    def __init__(
        self,
        store: Secret | None,
        *,
        prefix: str = "tier-gateway",
        timeout_s: float = 0.25,
        asyncio_api: bool = False,
    ) -> None:
        """``store``: a Redis URL, or None for memory. ``asyncio_api`` runs the Redis path's
        code on the in-memory store (tests). Build inside the event loop."""
        self.in_memory = store is None and not asyncio_api
        self.storage: Any
        self._pool: ConnectionPool | None = None
        if store is None:
            self.storage = (
                storage_from_string("async+memory://") if asyncio_api else SweptMemoryStorage()
            )
        else:
            url = store.reveal()
            # Our pool, so that it is ours to close; bounded as the warmth store's calls are.
            self._pool = ConnectionPool.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
            scheme, rest = url.split("://", 1)
            self.storage = storage_from_string(
                f"async+{LIMITS_SCHEMES[scheme]}://{rest}",
                implementation="redispy",  # redis-py, as the warmth store (not coredis)
                key_prefix=f"{prefix}:limits",  # beside the warmth store's <prefix>:tier:*
                connection_pool=self._pool,  # type: ignore[arg-type]  # an option it documents
            )
        self.errors = 0  # store calls that failed (the request was admitted: fail open)
        self._items: dict[tuple[str, int], RateLimitItem] = {}
        # (key name, kind) -> (count, window end) as this process last counted it: the tokens
        # and GPU time a request will use are unknown when it is admitted, so it is checked
        # against the last count, and a window's end is read from the store once per window.
        self._seen: dict[tuple[str, str], tuple[int, float]] = {}

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    def sweep(self) -> None:
        """Drop counters of past windows (in memory; a network store expires its own)."""
        if isinstance(self.storage, SweptMemoryStorage):
            self.storage.sweep()

    def _item(self, kind: str, amount: int) -> RateLimitItem:
        key = (kind, amount)
        item = self._items.get(key)
        if item is None:
            cls = RateLimitItemPerDay if kind == "gpu" else RateLimitItemPerMinute
            item = self._items[key] = cls(amount, namespace=f"gateway-{kind}")
        return item

    async def _count(self, kind: str, item: RateLimitItem, name: str, cost: int) -> int:
        """Add ``cost`` to the key's window; the window's count after it. This is
        ``limits``' ``FixedWindowRateLimiter.hit`` (``storage.incr`` of the item's key, then
        count <= limit), keeping the count it throws away: the ``x-ratelimit-remaining-*``
        headers need it, and reading it back costs as much as the hit."""
        store_key = item.key_for(name)
        if self.in_memory:
            count: int = self.storage.incr(store_key, item.get_expiry(), amount=cost)
        else:
            try:
                count = await self.storage.incr(store_key, item.get_expiry(), amount=cost)
            except STORE_FAILURES as exc:
                # A down or swamped Redis must not take the gateway down with it: the request
                # is admitted uncounted (fail open), the failure logged and counted.
                self.errors += 1
                log.warning("limits store failed, key %s admitted uncounted: %r", name, exc)
                return 0
        seen = self._seen.get((name, kind))
        now = time.time()
        if seen is not None and seen[1] > now and count > cost:
            ends = seen[1]  # the window this process saw open is still the one counting
        elif self.in_memory:
            ends = self.storage.get_expiry(store_key)
        else:
            try:
                ends = await self.storage.get_expiry(store_key)
            except STORE_FAILURES:
                self.errors += 1
                ends = now + item.get_expiry()
        self._seen[(name, kind)] = (count, ends)
        return count

    def _last(self, kind: str, name: str, window_s: float, now: float) -> tuple[int, float]:
        """(used, seconds to the window's end) as last counted; a fresh window if it ended."""
        count, ends = self._seen.get((name, kind), (0, 0.0))
        return (count, ends - now) if ends > now else (0, window_s)

    async def admit(self, key: KeyRecord) -> Headers:
        """Count one request; the ``x-ratelimit-*`` headers for the answer. Raises
        RateLimited (with Retry-After and the same headers) when a limit is used up."""
        headers: Headers = []
        if key.rpm is None and key.tpm is None and key.gpu_seconds_per_day is None:
            return headers
        refused: tuple[str, float] | None = None
        if key.rpm is not None:
            count = await self._count("rpm", self._item("rpm", key.rpm), key.name, 1)
            _, reset = self._last("rpm", key.name, MINUTE_S, time.time())
            headers += _headers(b"requests", key.rpm, key.rpm - count, reset)
            if count > key.rpm:
                refused = ("requests per minute", reset)
        now = time.time()
        if key.tpm is not None:
            used, reset = self._last("tpm", key.name, MINUTE_S, now)
            headers += _headers(b"tokens", key.tpm, key.tpm - used, reset)
            if used >= key.tpm and refused is None:
                refused = ("tokens per minute", reset)
        if key.gpu_seconds_per_day is not None:
            used, reset = self._last("gpu", key.name, DAY_S, now)
            left = key.gpu_seconds_per_day - math.ceil(used / GPU_MS)
            headers += _headers(b"gpu-seconds", key.gpu_seconds_per_day, left, reset)
            if used >= key.gpu_seconds_per_day * GPU_MS and refused is None:
                refused = ("GPU-seconds per day", reset)
        if refused is not None:
            what, reset = refused
            retry = max(1, math.ceil(reset))
            raise RateLimited(
                f"key {key.name!r} used its {what}; retry in {retry} s",
                headers={"Retry-After": str(retry), **{k.decode(): v.decode() for k, v in headers}},
                key=key.name,
                limit=what,
                retry_after_s=retry,
            )
        return headers

    async def charge(self, key: KeyRecord, *, tokens: int, gpu_s: float) -> None:
        """Add an answer's tokens and GPU time to the key's windows, all of it: the answer
        that crosses a limit counts in full, and the next request is refused."""
        if key.tpm is not None and tokens > 0:
            await self._count("tpm", self._item("tpm", key.tpm), key.name, tokens)
        if key.gpu_seconds_per_day is not None and gpu_s > 0:
            item = self._item("gpu", key.gpu_seconds_per_day * GPU_MS)
            await self._count("gpu", item, key.name, math.ceil(gpu_s * GPU_MS))


def _headers(kind: bytes, limit: int, remaining: int, reset_s: float) -> Headers:
    return [
        (b"x-ratelimit-limit-" + kind, b"%d" % limit),
        (b"x-ratelimit-remaining-" + kind, b"%d" % max(remaining, 0)),
        (b"x-ratelimit-reset-" + kind, reset_text(reset_s).encode()),
    ]
