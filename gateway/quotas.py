"""Per-key limits, counted by the ``limits`` library: requests and tokens per minute, and
GPU-seconds per day.

>>> quotas = Quotas("memory://")              # one process; "redis://host:6379" is shared
>>> headers = await quotas.admit(record)      # raises RateLimited past a limit
>>> await quotas.charge(record, tokens=512, gpu_s=0.8)

Where the counts live is the storage URL (``limits_store`` / ``GATEWAY_LIMITS_STORE``): in
memory they are this process's, so under ``gateway serve --workers N`` each worker counts on
its own and a key gets up to N times its limit; a ``redis://`` store is one count for every
worker and replica. ``limits`` has no file- or SQLite-backed storage to share across workers
of one machine, and a hand-written one is what the standards rule out.

Requests are counted before the request runs; tokens and GPU time are known only after the
answer, so they are charged then, and a key is refused once its window is used up. The
answer that crosses a limit is served (its cost was unknown), and fills the window.
Windows: requests and tokens use a sliding window counter (no double burst at a minute's
edge); GPU-seconds a fixed UTC day, so "per day" means what a budget means.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerDay, RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from gateway.errors import RateLimited
from gateway.keys import KeyRecord

Headers = list[tuple[bytes, bytes]]
GPU_MS = 1000  # GPU time is counted in milliseconds: the library counts integers


def reset_text(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``2h3m0s``."""
    total = max(1, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class Quotas:
    def __init__(self, store_url: str) -> None:
        """Call inside the event loop: the in-memory storage schedules its expiry there."""
        storage = storage_from_string("async+" + store_url)
        assert isinstance(storage, Storage)  # the async+ scheme gives the asyncio storages
        self.storage = storage
        self.sliding = SlidingWindowCounterRateLimiter(self.storage)
        self.daily = FixedWindowRateLimiter(self.storage)
        self._items: dict[tuple[str, int], RateLimitItem] = {}

    def _item(self, kind: str, amount: int) -> RateLimitItem:
        key = (kind, amount)
        item = self._items.get(key)
        if item is None:
            cls = RateLimitItemPerDay if kind == "gpu" else RateLimitItemPerMinute
            item = self._items[key] = cls(amount, namespace=f"gateway-{kind}")
        return item

    async def admit(self, key: KeyRecord) -> Headers:
        """Count one request; the ``x-ratelimit-*`` headers for the answer. Raises
        RateLimited (with Retry-After and the same headers) when a limit is used up."""
        headers: Headers = []
        if key.rpm is None and key.tpm is None and key.gpu_seconds_per_day is None:
            return headers
        now = time.time()
        refused: tuple[str, float] | None = None
        if key.rpm is not None:
            item = self._item("rpm", key.rpm)
            allowed = await self.sliding.hit(item, key.name)
            stats = await self.sliding.get_window_stats(item, key.name)
            reset = max(stats.reset_time - now, 0.0)
            headers += _headers(b"requests", key.rpm, stats.remaining, reset)
            if not allowed:
                refused = ("requests per minute", reset)
        if key.tpm is not None:
            item = self._item("tpm", key.tpm)
            stats = await self.sliding.get_window_stats(item, key.name)
            reset = max(stats.reset_time - now, 0.0)
            headers += _headers(b"tokens", key.tpm, stats.remaining, reset)
            if stats.remaining <= 0 and refused is None:
                refused = ("tokens per minute", reset)
        if key.gpu_seconds_per_day is not None:
            item = self._item("gpu", key.gpu_seconds_per_day * GPU_MS)
            stats = await self.daily.get_window_stats(item, key.name)
            reset = max(stats.reset_time - now, 0.0)
            left = stats.remaining // GPU_MS
            headers += _headers(b"gpu-seconds", key.gpu_seconds_per_day, left, reset)
            if stats.remaining <= 0 and refused is None:
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
        """Add an answer's tokens and GPU time to the key's windows (capped at what is left:
        the library refuses a hit larger than the remainder, and the window must fill)."""
        if key.tpm is not None and tokens > 0:
            await _spend(self.sliding, self._item("tpm", key.tpm), key.name, tokens)
        if key.gpu_seconds_per_day is not None and gpu_s > 0:
            item = self._item("gpu", key.gpu_seconds_per_day * GPU_MS)
            await _spend(self.daily, item, key.name, math.ceil(gpu_s * GPU_MS))

    async def reset(self) -> None:
        await self.storage.reset()


async def _spend(
    limiter: SlidingWindowCounterRateLimiter | FixedWindowRateLimiter,
    item: RateLimitItem,
    name: str,
    cost: int,
) -> None:
    if not await limiter.hit(item, name, cost=cost):
        left = (await limiter.get_window_stats(item, name)).remaining
        if left > 0:
            await limiter.hit(item, name, cost=left)


def _headers(kind: bytes, limit: int, remaining: int, reset_s: float) -> Headers:
    return [
        (b"x-ratelimit-limit-" + kind, b"%d" % limit),
        (b"x-ratelimit-remaining-" + kind, b"%d" % max(remaining, 0)),
        (b"x-ratelimit-reset-" + kind, reset_text(reset_s).encode()),
    ]
