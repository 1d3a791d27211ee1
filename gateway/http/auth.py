"""API keys on every route: who may call, which tiers, how fast, and what it cost.

>>> gate = Gate(settings)                    # keys on with a keys file or a shared key store
>>> Litestar(..., middleware=[gate.middleware], lifespan=[..., gate.lifespan])

The middleware runs for every Litestar route (Litestar builds it into each route's stack):

- ``/health`` is open; every other route needs ``Authorization: Bearer <key>`` of a live key
  (401 with ``WWW-Authenticate: Bearer`` otherwise); ``/warmup``, ``/status`` and
  ``/metrics`` need an ``admin`` key (403 for a ``client`` key).
- The key's limits are counted (``gateway.access.quotas``): 429 with ``Retry-After`` past
  one, and the ``x-ratelimit-*`` headers OpenAI's clients read on every answer.
- The request's ``Grant`` is left in ``scope["state"]["grant"]``; the completion handlers pass
  it into their ``Job``, and the dispatcher refuses a tier the key lacks (403) and never falls
  back to one. What each tier answer cost (``gateway.access.spend``) is added to the key's usage and
  returned as ``x-gpu-seconds`` / ``x-gpu-cost-usd``.

Nothing here logs, renders or counts a key: only its name, or "unknown".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.access.keys import RELOAD_EVERY_S, Grant, KeyRecord, KeyStore
from gateway.access.quotas import FLUSH_EVERY_S, SWEEP_EVERY_S, Quotas
from gateway.access.spend import KeySpend, cost_usd, gpu_seconds
from gateway.clock import cancel_and_wait
from gateway.errors import Forbidden, GatewayError, Unauthenticated
from gateway.http.observability import facts_in
from gateway.settings import Settings

log = logging.getLogger("gateway.http.auth")

OPEN_PATHS = frozenset({"/health"})  # liveness probes carry no key
ADMIN_PATHS = frozenset({"/warmup", "/status", "/metrics"})  # boots GPUs; shows every key's spend
# "Bearer " and a 46-character key fit many times; a longer header is a mistake or an attack,
# refused before it is hashed or matched.
MAX_AUTHORIZATION_BYTES = 512
_BEARER = re.compile(rb"Bearer ([A-Za-z0-9._~+/=-]+)", re.IGNORECASE)  # RFC 6750 b64token


def key_from_header(value: bytes | None) -> str:
    """The key in an ``Authorization`` header, or Unauthenticated naming what is wrong with
    it (never echoing it)."""
    if value is None:
        raise Unauthenticated("no API key: send `Authorization: Bearer <key>`")
    if len(value) > MAX_AUTHORIZATION_BYTES:
        raise Unauthenticated(
            f"the Authorization header is over {MAX_AUTHORIZATION_BYTES} bytes",
            max_bytes=MAX_AUTHORIZATION_BYTES,
        )
    match = _BEARER.fullmatch(value)
    if match is None:
        raise Unauthenticated(
            "the Authorization header must be `Bearer <key>`: one space, no other whitespace"
        )
    return match.group(1).decode()


class Gate:
    """The keys, the limits and the spend of one app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = KeyStore(settings.keys_file) if settings.keys_on else None
        self.quotas: Quotas | None = None  # built in the lifespan: needs the event loop
        self.spend: KeySpend | None = None  # registered in the app's metrics in the lifespan
        self.reload_every_s = RELOAD_EVERY_S
        self.flush_every_s = FLUSH_EVERY_S

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        """After the app's own lifespan (it needs ``app.state.runtime``'s metrics)."""
        app.state.gate = self  # tests and the operator's shell reach the keys through the app
        if self.keys is None:
            yield
            return
        metrics = app.state.runtime.metrics
        self.spend = KeySpend(metrics.registry, multiprocess=metrics.multiprocess)
        self.quotas = Quotas(
            self.settings.limits_store,
            prefix=self.settings.state_prefix,
            timeout_s=self.settings.state_timeout_s,
        )
        if self.settings.supervisor_pid is not None and self.settings.limits_store is None:
            log.warning(
                "per-key limits are counted per worker (in memory): with N workers a key gets "
                "up to N times its limits; set GATEWAY_STATE (or GATEWAY_LIMITS_STORE) to Redis"
            )
        reloader = asyncio.create_task(self._maintain())
        stop = asyncio.Event()
        flusher = asyncio.create_task(self._flush_charges(self.quotas, stop))
        try:
            yield
        finally:
            await cancel_and_wait(reloader)
            stop.set()  # not cancelled: a flush cut short would lose its charges
            await flusher  # its last flush: the last answers' charges
            await self.quotas.aclose()

    async def _maintain(self) -> None:
        """Reload the keys file when it changed; now and then drop past limit windows."""
        keys, quotas = self.keys, self.quotas
        assert keys is not None
        assert quotas is not None
        since_sweep = 0.0
        while True:
            await asyncio.sleep(self.reload_every_s)
            await asyncio.to_thread(keys.refresh)  # a stat(), a read when it changed
            since_sweep += self.reload_every_s
            if since_sweep >= SWEEP_EVERY_S:
                quotas.sweep()
                since_sweep = 0.0

    async def _flush_charges(self, quotas: Quotas, stop: asyncio.Event) -> None:
        """Write held tokens and GPU time to the shared store (``Quotas.flush``) every
        ``flush_every_s``, and once more when ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_every_s)
            await quotas.flush()

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Litestar middleware (a factory of ASGI apps); with keys off, ``app`` itself."""
        if self.keys is None:
            return app
        keys = self.keys

        async def authenticate(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP or scope["path"] in OPEN_PATHS:
                await app(scope, receive, send)
                return
            sent = None
            for header, value in scope["headers"]:
                if header == b"authorization":
                    sent = value
                    break
            key: KeyRecord | None = None
            try:
                key = keys.lookup(key_from_header(sent))
                if key is None:
                    raise Unauthenticated("the API key is not valid (unknown or revoked)")
                if scope["path"] in ADMIN_PATHS and key.role != "admin":
                    raise Forbidden(f"{scope['path']} needs an admin key", key=key.name)
                assert self.quotas is not None
                limit_headers = await self.quotas.admit(key)
            except GatewayError as error:
                known = key.name if key is not None else "unknown"
                facts_in(scope).key = known  # the log line names the key, never shows it
                if self.spend is not None:
                    self.spend.refuse(known, error.status)
                raise
            facts_in(scope).key = key.name
            grant = Grant(key)
            scope.setdefault("state", {})["grant"] = grant
            await self._serve(app, scope, receive, send, grant, limit_headers)

        return authenticate

    async def _serve(
        self,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        send: Send,
        grant: Grant,
        limit_headers: list[tuple[bytes, bytes]],
    ) -> None:
        counted = 0  # calls already turned into spend
        tokens, gpu_s = 0, 0.0  # theirs, for the key's windows

        async def send_with_headers(message: Message) -> None:
            nonlocal counted, tokens, gpu_s
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *limit_headers]
                if grant.calls:
                    counted = len(grant.calls)
                    tokens, gpu_s, usd = self._record(grant, 0)
                    headers += [
                        # microseconds of GPU, nano-dollars: a warm answer is a few cents
                        (b"x-gpu-seconds", b"%.6f" % gpu_s),
                        (b"x-gpu-cost-usd", b"%.9f" % usd),
                    ]
                message["headers"] = headers
            await send(message)

        try:
            await app(scope, receive, send_with_headers)
        finally:
            if counted < len(grant.calls):  # noted after the answer started, or no answer
                more_tokens, more_gpu_s, _ = self._record(grant, counted)
                tokens += more_tokens
                gpu_s += more_gpu_s
            if tokens or gpu_s:
                assert self.quotas is not None
                self.quotas.charge(grant.key, tokens=tokens, gpu_s=gpu_s)

    def _record(self, grant: Grant, start: int) -> tuple[int, float, float]:
        """The spend of the tier answers of this request from ``start`` on, into the key's
        series; their (tokens, GPU-seconds, dollars)."""
        tokens, total_gpu, total_usd = 0, 0.0, 0.0
        for name, latency_s, answer_tokens in grant.calls[start:]:
            tier = self.settings.tiers[name]
            gpu_s = gpu_seconds(tier, latency_s)
            usd = cost_usd(tier, gpu_s)
            if self.spend is not None:
                self.spend.record(grant.key.name, name, tokens=answer_tokens, gpu_s=gpu_s, usd=usd)
            tokens += answer_tokens
            total_gpu += gpu_s
            total_usd += usd
        return tokens, total_gpu, total_usd


def grant_of(scope: Any) -> Grant | None:
    """The request's grant (None with keys off), for the completion handlers' ``Job``."""
    grant: Grant | None = scope.get("state", {}).get("grant")
    return grant
