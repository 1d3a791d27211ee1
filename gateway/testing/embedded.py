"""The embedded CPU tier for a recording session, started only when a request needs it.

Booting the small model takes tens of seconds, and most recordings never reach it: their
requests are in the cassette already, or they call another tier. So its URL is known at once
(a loopback port held from the start) and its process starts on the first request the
cassette transport must send it live; that request waits until ``/health`` answers 200, and
every later one, in any test of the session, finds it up.

>>> tier = EmbeddedTier(boot_s=300.0)
>>> settings = settings.with_tier_url("dev", tier.url)      # nothing started yet
>>> t = CassetteTransport(cassette, mode="record", tiers=..., on_demand={"dev": tier})
>>> ...                                                     # a cassette miss starts it
>>> tier.close()                                            # at the end of the session

A tier that exits while booting, or is not up within ``boot_s``, is stopped; that request
and every later one raise ``RuntimeError`` naming why, as a failed session fixture would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import NoReturn

import httpx

from gateway.ops.serving import start_local_tier, stop

HOST = "127.0.0.1"
POLL_S = 0.5  # between health checks while it boots: a boot takes seconds, not milliseconds
HEALTH_TIMEOUT = httpx.Timeout(2.0)  # a listening tier answers /health at once, even loading

Start = Callable[[int], subprocess.Popen[bytes]]  # port -> the running child


class EmbeddedTier:
    """Implements ``gateway.testing.transport.OnDemand``; safe to share across the event
    loops of a session's tests (each test's gateway runs its own)."""

    def __init__(self, *, boot_s: float, start: Start | None = None) -> None:
        self.boot_s = boot_s
        self._start = start or start_local_tier
        # Held, bound but not listening, until the child starts: no other bind to port 0 is
        # given it meanwhile. Closed just before the child binds it.
        self._reserved: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._reserved.bind((HOST, 0))
        self.port: int = self._reserved.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self._health = f"{self.url}/health"
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._deadline = 0.0
        self._up = False
        self._failure: str | None = None

    @property
    def started(self) -> bool:
        """Whether its process was started (it may still be booting)."""
        return self._child is not None

    def raise_failure(self) -> None:
        """Raise why an earlier start failed, if one did: a later test errors at once."""
        if self._failure is not None:
            raise RuntimeError(self._failure)

    def ensure_up(self) -> str:
        """Start it if nobody has, block until it answers; its URL."""
        if self._up:
            return self.url
        child = self._launch()
        while not self._up:
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                self._up = httpx.get(self._health, timeout=HEALTH_TIMEOUT).status_code == 200
            if not self._up:
                self._check(child)
                time.sleep(POLL_S)
        return self.url

    async def aensure_up(self) -> str:
        """``ensure_up`` for an event loop: the wait sleeps, it never blocks the loop."""
        if self._up:
            return self.url
        child = self._launch()
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT) as client:
            while not self._up:
                with contextlib.suppress(httpx.HTTPError):  # not listening yet
                    self._up = (await client.get(self._health)).status_code == 200
                if not self._up:
                    if (why := self._why_not_up(child)) is not None:
                        await asyncio.to_thread(self._fail, why)  # stopping it may wait
                    await asyncio.sleep(POLL_S)
        return self.url

    def close(self) -> None:
        with self._lock:
            child, self._child = self._child, None
            if self._reserved is not None:
                self._reserved.close()
                self._reserved = None
        if child is not None:
            stop(child)

    # --- internals ------------------------------------------------------------------------

    def _launch(self) -> subprocess.Popen[bytes]:
        """The child, started by the first caller (whatever its thread or loop)."""
        with self._lock:
            self.raise_failure()
            if self._child is None:
                if self._reserved is not None:
                    self._reserved.close()
                    self._reserved = None
                self._deadline = time.monotonic() + self.boot_s
                self._child = self._start(self.port)
            return self._child

    def _why_not_up(self, child: subprocess.Popen[bytes]) -> str | None:
        if child.poll() is not None:
            return f"the embedded CPU tier exited with {child.returncode}"
        if time.monotonic() > self._deadline:
            return f"the embedded CPU tier was not up in {self.boot_s:g} s"
        return None

    def _check(self, child: subprocess.Popen[bytes]) -> None:
        if (why := self._why_not_up(child)) is not None:
            self._fail(why)

    def _fail(self, why: str) -> NoReturn:
        """Remember the first failure (later calls raise it again), stop the child."""
        with self._lock:
            self._failure = self._failure or why
            child = self._child
        if child is not None:
            stop(child)
        raise RuntimeError(self._failure)
