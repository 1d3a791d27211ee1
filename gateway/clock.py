"""Time, injected: warmth, dispatch and keep-warm read time only through a ``Clock``, so
cold-start behaviour is tested on a ``ManualClock`` without sleeping.

>>> clock = ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
>>> await clock.advance(30)   # sleepers due within 30 s wake, in time order
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """Where warmth gets its time. ``time`` is wall-clock epoch seconds (the clock worker
    processes share, used in the store); ``monotonic`` measures local durations."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when told, for tests and simulations::

    clock = ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    task = asyncio.create_task(tracker.warm_up("prod", probe))
    await clock.advance(30)     # sleepers due within 30 s wake, in time order
    await clock.parked()        # ... and the one woken has done its I/O and sleeps again
    """

    def __init__(self, start: datetime) -> None:
        self._epoch = start.timestamp()
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._slept: asyncio.Future[None] | None = None  # set when a task starts to sleep

    def time(self) -> float:
        return self._epoch + self._elapsed

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._order), wake))
        if self._slept is not None and not self._slept.done():
            self._slept.set_result(None)
        await wake

    @property
    def sleeping(self) -> int:
        """How many tasks wait on this clock (a cancelled sleep no longer counts)."""
        return sum(1 for _, _, wake in self._sleepers if not wake.done())

    async def parked(self, count: int = 1) -> None:
        """Return once ``count`` tasks sleep on this clock, without moving it: how a test
        knows the code under test has reached its next timed wait, whatever real I/O (a
        store's thread, a socket) it did on the way, which ``advance``'s settling of the
        event loop does not wait for."""
        while self.sleeping < count:
            if self._slept is None or self._slept.done():
                self._slept = asyncio.get_running_loop().create_future()
            await self._slept

    async def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, waking each sleeper at its own time and letting the
        tasks it wakes run before the next."""
        target = self._elapsed + seconds
        await _settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, wake = heapq.heappop(self._sleepers)
            self._elapsed = max(self._elapsed, when)
            if not wake.done():
                wake.set_result(None)
            await _settle()
        self._elapsed = target
        await _settle()


async def _settle() -> None:
    # Enough loop turns for a woken task to run to its next real wait (store, event, sleep).
    for _ in range(50):
        await asyncio.sleep(0)


async def within(clock: Clock, work: Awaitable[T], seconds: float) -> tuple[bool, T | None]:
    """Await ``work`` for at most ``seconds`` of ``clock`` time: (True, result) if it
    finished (its exception propagates), (False, None) if time ran out (it is cancelled)."""
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, timer):
            pending.cancel()
        await asyncio.gather(task, timer, return_exceptions=True)
    if task.cancelled() or not task.done():
        return False, None
    return True, task.result()


# How long a cancelled task may run on before it is cancelled again: longer than the cleanup
# a cancel starts (a warm-up releasing its lease: one store write, 0.25 s at most on Redis),
# so a second cancel does not cut that short, and short enough not to hold a shutdown.
RECANCEL_S = 1.0


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` and wait until each has ended, cancelling again while one runs on.

    A single cancel can be lost: on Python 3.11, ``asyncio.wait_for`` (redis-py sends every
    command inside one) returns the result instead of raising when the cancel lands in the
    step its inner call finished, and a loop around that call goes on. A background loop
    stopped with one cancel could then outlive its owner, renewing a lease or keeping
    shutdown waiting for good (issue 17's stuck warm-up). Each task's own exception is
    dropped: it was being stopped."""
    pending = {task for task in tasks if task is not None}
    while pending := {task for task in pending if not task.done()}:
        for task in pending:
            task.cancel()
        # real time, not a Clock's: a lost cancel is retried whatever clock a test injects
        await asyncio.wait(pending, timeout=RECANCEL_S)
    for stopped in tasks:
        if stopped is not None and not stopped.cancelled():
            stopped.exception()  # retrieved, so asyncio does not log it as never retrieved
