"""Per-key limits, counted by the ``limits`` library: requests and tokens per minute, and
GPU-seconds per day.

>>> quotas = Quotas(None)                     # in memory: one process
>>> quotas = Quotas(Secret("redis://host:6379/0"), prefix="tier-gateway")   # shared
>>> headers = await quotas.admit(record)      # raises RateLimited past a limit
>>> quotas.charge(record, tokens=512, gpu_s=0.8)     # held; written by ``flush``

Where the counts live is the storage URL (``limits_store`` / ``GATEWAY_LIMITS_STORE``, by
default the ``state`` Redis of the shared warmth store when there is one): in memory they
are this process's, so under ``gateway serve --workers N`` each worker counts on
its own and a key gets up to N times its limit; a ``redis://`` store is one count for every
worker and replica. ``limits`` has no file- or SQLite-backed storage to share across workers
of one machine, and a hand-written one is what the standards rule out.

Requests are counted before the request runs; tokens and GPU time are known only after the
answer, so they are charged then, in full, and a key is refused once its window is used up.
The answer that crosses a limit is served (its cost was unknown). A request is checked
against tokens and GPU time as this process last counted them (no store read per request).
Charges are held and written together (``flush``: one ``incr`` per key and limit, every
``FLUSH_EVERY_S`` from the gate's background task, and at shutdown) instead of two store
calls after every answer, which cost ~150 µs of CPU per request in redis-py, and ~6 µs in
memory (bench/results/auth_hot_path.md); this process's own checks see its held charges at
once. With a shared store, a worker sees the other workers' charges at its own next flush,
so a used-up key may get one more request through each worker, plus what it sends within a
flush interval.

An rpm limit costs one store call per request in the steady state (an ``incr``; a window's
end is read once per window), tokens and GPU time one per key and limit per flush: the
library's strategy objects read the window back for the headers, a second call per limit,
which put three limits at twice the CPU budget.
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

from gateway.access.keys import KeyRecord
from gateway.errors import RateLimited
from gateway.settings import Secret
from gateway.shared_redis import StoreFailure

log = logging.getLogger("gateway.access.quotas")
Headers = list[tuple[bytes, bytes]]
GPU_MS = 1000  # GPU time is counted in milliseconds: the library counts integers
LIMITS_SCHEMES = {
    "redis": "redis",
    "rediss": "rediss",
    "unix": "redis+unix",
}  # settings' -> limits'
SWEEP_EVERY_S = 10.0  # drops the in-memory counters of past windows (memory, not correctness)
# Held charges go to the store this often: other workers see a charge this much later at most
# (then at their own next flush); at load one incr per key and limit replaces one per answer,
# and four wake-ups a second cost nothing measurable.
FLUSH_EVERY_S = 0.25


def wrapped_once(cls: type[MemoryStorage]) -> type[MemoryStorage]:
    """Give a subclass of ``MemoryStorage`` its parent's storage methods back. ``limits``
    wraps the storage methods of every subclass of ``Storage`` in its error translator, so a
    subclass of a storage wraps the wrapped methods again: two wrappers per call, and four
    per ``incr`` (it calls ``get``), about a tenth of the gate's CPU per request. The names
    are the ones ``Storage.__init_subclass__`` wraps."""
    for name in ("incr", "get", "get_expiry", "check", "reset", "clear"):
        inherited = vars(MemoryStorage)[name]
        if getattr(vars(cls)[name], "__wrapped__", None) is inherited:  # not one of its own
            setattr(cls, name, inherited)
    return cls


@wrapped_once
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


class Kind:
    """One kind of limit: what ``limits`` counts it as, and the headers that show it."""

    __slots__ = ("headers", "item", "label", "namespace")

    def __init__(self, label: str, item: type[RateLimitItem], shown_as: bytes, short: str) -> None:
        self.label = label  # as a 429 names it
        self.item = item
        self.namespace = f"gateway-{short}"  # in the store's keys: the same across versions
        self.headers = tuple(
            b"x-ratelimit-%s-%s" % (part, shown_as) for part in (b"limit", b"remaining", b"reset")
        )


REQUESTS = Kind("requests per minute", RateLimitItemPerMinute, b"requests", "rpm")
TOKENS = Kind("tokens per minute", RateLimitItemPerMinute, b"tokens", "tpm")
GPU_TIME = Kind("GPU-seconds per day", RateLimitItemPerDay, b"gpu-seconds", "gpu")


class Window:
    """One limit of one key as this process last counted it. Built once per key and limit, so
    that a request neither rebuilds the store's key nor formats again what has not changed
    (the limit; the reset text changes once a second)."""

    __slots__ = (
        "count",
        "ends",
        "expiry_s",
        "held",
        "kind",
        "limit_text",
        "name",
        "reset_s",
        "reset_text",
        "store_key",
        "unsure",
    )

    def __init__(self, kind: Kind, name: str, amount: int, shown_limit: int) -> None:
        item = kind.item(amount, namespace=kind.namespace)
        self.kind = kind
        self.name = name  # the key's name, for the log
        self.store_key = item.key_for(name)  # the amount is in it: a changed limit counts afresh
        self.expiry_s = item.get_expiry()
        self.count = 0  # after this process's last incr
        self.ends = 0.0  # when the window ends (epoch seconds); 0.0: none seen open
        self.held = 0  # charged here, not yet written to a shared store (in ``count``)
        self.unsure = False  # ``ends`` is this process's guess: the store's is read at a flush
        self.limit_text = b"%d" % shown_limit
        self.reset_s = 0
        self.reset_text = b""

    def used(self, now: float) -> tuple[int, float]:
        """(used, seconds to the window's end) as last counted; a fresh window if it ended."""
        return (self.count, self.ends - now) if self.ends > now else (0, self.expiry_s)

    def headers(self, remaining: int, reset_s: float) -> Headers:
        whole = max(1, math.ceil(reset_s))
        if whole != self.reset_s:
            self.reset_s, self.reset_text = whole, reset_text(whole).encode()
        limit, left, reset = self.kind.headers
        return [
            (limit, self.limit_text),
            (left, b"%d" % max(remaining, 0)),
            (reset, self.reset_text),
        ]


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
        # (key name, kind, amount) -> its window as this process last counted it: the tokens
        # and GPU time a request will use are unknown when it is admitted, so it is checked
        # against the last count, and a window's end is read from the store once per window.
        self._windows: dict[tuple[str, Kind, int], Window] = {}
        self._held: dict[Window, None] = {}  # windows with charges to flush, in charge order

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    def sweep(self) -> None:
        """Drop counters of past windows: the store's (in memory; a network store expires its
        own) and this process's view of them (keys revoked or given new limits)."""
        if isinstance(self.storage, SweptMemoryStorage):
            self.storage.sweep()
        now = time.time()
        for seen, window in list(self._windows.items()):
            if window.ends <= now:
                del self._windows[seen]

    def _window(self, kind: Kind, name: str, amount: int, shown_limit: int) -> Window:
        window = self._windows.get((name, kind, amount))
        if window is None:
            window = self._windows[(name, kind, amount)] = Window(kind, name, amount, shown_limit)
        return window

    async def _count(self, window: Window, name: str, cost: int) -> int:
        """Add ``cost`` to the key's window; the window's count after it. This is
        ``limits``' ``FixedWindowRateLimiter.hit`` (``storage.incr`` of the item's key, then
        count <= limit), keeping the count it throws away: the ``x-ratelimit-remaining-*``
        headers need it, and reading it back costs as much as the hit."""
        if self.in_memory:
            count: int = self.storage.incr(window.store_key, window.expiry_s, amount=cost)
        else:
            try:
                count = await self.storage.incr(window.store_key, window.expiry_s, amount=cost)
            except StoreFailure as exc:
                # A down or swamped Redis must not take the gateway down with it: the request
                # is admitted uncounted (fail open), the failure logged and counted.
                self.errors += 1
                log.warning("limits store failed, key %s admitted uncounted: %r", name, exc)
                return 0
        now = time.time()
        # Unless the window this process saw open is still the one counting, read its end.
        if window.ends <= now or count <= cost or window.unsure:
            if self.in_memory:
                window.ends = self.storage.get_expiry(window.store_key)
            else:
                try:
                    window.ends = await self.storage.get_expiry(window.store_key)
                except StoreFailure:
                    self.errors += 1
                    window.ends = now + window.expiry_s
            window.unsure = False
        window.count = count + window.held  # charges held while the store answered
        return count

    async def admit(self, key: KeyRecord) -> Headers:
        """Count one request; the ``x-ratelimit-*`` headers for the answer. Raises
        RateLimited (with Retry-After and the same headers) when a limit is used up."""
        if key.rpm is None and key.tpm is None and key.gpu_seconds_per_day is None:
            return []
        headers: Headers = []
        refused: tuple[str, float] | None = None
        if key.rpm is not None:
            window = self._window(REQUESTS, key.name, key.rpm, key.rpm)
            count = await self._count(window, key.name, 1)
            _, reset = window.used(time.time())
            headers += window.headers(key.rpm - count, reset)
            if count > key.rpm:
                refused = (REQUESTS.label, reset)
        now = time.time()
        if key.tpm is not None:
            window = self._window(TOKENS, key.name, key.tpm, key.tpm)
            used, reset = window.used(now)
            headers += window.headers(key.tpm - used, reset)
            if used >= key.tpm and refused is None:
                refused = (TOKENS.label, reset)
        if key.gpu_seconds_per_day is not None:
            limit = key.gpu_seconds_per_day
            window = self._window(GPU_TIME, key.name, limit * GPU_MS, limit)
            used, reset = window.used(now)
            headers += window.headers(limit - math.ceil(used / GPU_MS), reset)
            if used >= limit * GPU_MS and refused is None:
                refused = (GPU_TIME.label, reset)
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

    def charge(self, key: KeyRecord, *, tokens: int, gpu_s: float) -> None:
        """Add an answer's tokens and GPU time to the key's windows, all of it: the answer
        that crosses a limit counts in full, and the next request is refused. This process's
        checks see them at once; the store gets them at the next ``flush``."""
        if key.tpm is not None and tokens > 0:
            window = self._window(TOKENS, key.name, key.tpm, key.tpm)
            self._add(window, tokens)
        if key.gpu_seconds_per_day is not None and gpu_s > 0:
            limit = key.gpu_seconds_per_day
            window = self._window(GPU_TIME, key.name, limit * GPU_MS, limit)
            self._add(window, math.ceil(gpu_s * GPU_MS))

    def _add(self, window: Window, cost: int) -> None:
        now = time.time()
        if window.ends <= now:  # the flush opens the window, or finds one another worker opened
            window.count, window.ends, window.unsure = 0, now + window.expiry_s, True
        window.count += cost
        window.held += cost
        self._held[window] = None

    async def flush(self) -> None:
        """Write the charges held since the last flush to the store, one ``incr`` per window,
        and take the store's counts (the other workers' charges) back."""
        held, self._held = self._held, {}
        for window in held:
            cost, window.held = window.held, 0
            if cost:
                await self._count(window, window.name, cost)
