"""One generation at a time, the rest waiting in a bounded first-come-first-served queue.

>>> scheduler = Scheduler(max_queue=8)
>>> result = await scheduler.run(work, until=client_gone)  # work(cancel_event) -> result

torch already uses both cores for one request, so requests run one after another on a
single worker thread, off the event loop. ``max_queue`` requests may wait; one more gets
``QueueFull`` (the server's 429) with an honest Retry-After. Admission happens on the event
loop thread only, so the counts need no lock. A request whose client goes away is dropped
from the queue, or, if already running, stopped at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Before any request has finished, guess this long per request for Retry-After.
FIRST_GUESS_S = 5.0
# Weight of the newest request in the running mean of service time.
SMOOTHING = 0.3


class ClientGone(Exception):
    """The ``until`` awaitable finished first: nobody is waiting for this result any more."""


class ShuttingDown(Exception):
    """The server is stopping: queued and new requests are refused, not left hanging."""


class QueueFull(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"queue full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Scheduler:
    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-tier-gen")
        self._admitted = 0  # waiting + running; touched on the event loop only
        self._running = 0  # written by the worker thread; read for metrics
        self._service_s = FIRST_GUESS_S
        self._jobs: dict[threading.Event, Future[Any]] = {}
        self._closing = False

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return max(0, self._admitted - self._running)

    async def run(
        self,
        work: Callable[[threading.Event], T],
        *,
        until: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        """Queue ``work``, wait for its result. If ``until()`` finishes first (the client
        disconnected), the job is taken out of the queue or told to stop, and ``ClientGone``
        is raised. ``QueueFull`` when no room is left, ``ShuttingDown`` after ``close``."""
        if self._closing:
            raise ShuttingDown
        if self._admitted >= self.max_queue + 1:
            raise QueueFull(self.retry_after_s())
        cancel = threading.Event()
        self._admitted += 1
        submitted = self._executor.submit(self._work, work, cancel)
        self._jobs[cancel] = submitted
        job = asyncio.wrap_future(submitted)
        watch = asyncio.ensure_future(until()) if until is not None else None
        try:
            if watch is not None:
                pending: list[asyncio.Future[Any]] = [job, watch]
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if not job.done():
                    raise ClientGone
            return await job
        except asyncio.CancelledError:
            if submitted.cancelled() and self._closing:  # close() ran while we waited
                raise ShuttingDown from None
            raise
        finally:
            cancel.set()  # no-op once finished; stops a running job at its next token
            if watch is not None:
                watch.cancel()
            # Still queued: the executor drops it. Running: wait the moment it takes to
            # notice the event, so the slot is only freed once the thread is.
            if not submitted.cancel() and not job.done():
                with contextlib.suppress(BaseException):
                    await asyncio.shield(job)
            self._jobs.pop(cancel, None)
            self._admitted -= 1

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: everyone admitted, at the mean service time."""
        return max(1, math.ceil(self._admitted * self._service_s))

    def _work(self, work: Callable[[threading.Event], T], cancel: threading.Event) -> T:
        self._running += 1
        started = time.perf_counter()
        try:
            return work(cancel)
        finally:
            took = time.perf_counter() - started
            self._service_s = (1 - SMOOTHING) * self._service_s + SMOOTHING * took
            self._running -= 1

    def close(self) -> None:
        """Refuse new requests and drop the queued ones (``ShuttingDown``); the running one
        may finish. Call on the event loop thread, as soon as a stop is asked for."""
        self._closing = True
        for submitted in list(self._jobs.values()):
            submitted.cancel()  # refused (False) by the one already running

    def shutdown(self) -> None:
        """Stop the running job at its next token, drop the queued ones, free the thread."""
        self.close()
        for cancel in list(self._jobs):
            cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
