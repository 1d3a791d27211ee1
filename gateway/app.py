"""The application factory.

>>> app = create_app(load_settings())                      # what `gateway serve` runs
>>> app = create_app(settings, transport=respx_transport)  # tests: every tier call mocked

The lifespan owns everything with a life of its own: one tier client per tier, the warmth
tracker and its background tasks. Nothing is created at import time.

Every route, the two completion routes included, is a Litestar route handler: the edge
middleware (request id, metric, log line, cancellation when the client hangs up), allowed
hosts, CORS, the exception handlers (``gateway.http.problems``) and the generated OpenAPI document
apply to all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin

from gateway.access.shared_keys import KeyFollower, SharedKeys
from gateway.clock import Clock, SystemClock
from gateway.http.auth import Gate
from gateway.http.observability import Metrics, edge_middleware
from gateway.http.problems import EXCEPTION_HANDLERS
from gateway.http.routes import generate, openai, ops
from gateway.logs import configure_logging
from gateway.routing.dispatch import Dispatcher
from gateway.routing.tier_client import TierClient
from gateway.routing.warmth_service import WarmthService
from gateway.runtime import Runtime
from gateway.settings import Settings, load_settings
from gateway.structured.preflight import SchemaChecker


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    allowed_hosts: Sequence[str] | None = None,
    cors_config: CORSConfig | None = None,
) -> Litestar:
    """Build the app; ``transport`` replaces the network for every tier, ``clock`` the time
    (tests). ``allowed_hosts`` and ``cors_config`` are Litestar's own, and apply to every
    route (deployments that want them in front of the gateway)."""
    clock = clock or SystemClock()
    gate = Gate(settings)  # API keys, limits, spend: on with a keys file or key store

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        clients = {
            name: TierClient(tier, settings, transport=transport)
            for name, tier in settings.tiers.items()
        }
        metrics = Metrics()
        warmth = WarmthService.build(
            settings,
            clients,
            clock=clock,
            on_warm_up=lambda tier: metrics.warmups.labels(tier).inc(),
            on_cold_start=lambda tier, s: metrics.cold_start.labels(tier).observe(s),
            on_store_error=metrics.store_errors.inc,
        )
        metrics.watch_states(warmth.states)
        runtime = Runtime(
            settings=settings,
            clients=clients,
            warmth=warmth,
            dispatcher=Dispatcher(settings, clients, warmth, clock=clock.monotonic),
            checker=SchemaChecker(),
            metrics=metrics,
        )
        app.state.runtime = runtime
        try:
            await runtime.start()
            yield
        finally:
            del app.state.runtime
            await runtime.aclose()

    return Litestar(
        route_handlers=[generate.generate, *openai.HANDLERS, *ops.HANDLERS],
        lifespan=[lifespan, gate.lifespan, shared_keys_lifespan(settings, gate, clock)],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,  # a 413 problem, chunked bodies too
        middleware=[edge_middleware, gate.middleware],
        allowed_hosts=list(allowed_hosts) if allowed_hosts is not None else None,
        cors_config=cors_config,
        openapi_config=OpenAPIConfig(
            title="tier-gateway",
            version="0.1.0",
            description="One URL in front of dev and prod tiers of JSON-schema-constrained "
            "generation.",
            path="/docs",
            render_plugins=[ScalarRenderPlugin()],
        ),
        debug=False,
        logging_config=None,  # logging is configured once, as JSON lines (observability.py)
    )


def shared_keys_lifespan(
    settings: Settings, gate: Gate, clock: Clock
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """With ``keys_store``: the shared keys read before the first request (bounded by
    ``state_timeout_s``; Redis down leaves the file's keys), then followed every
    ``FOLLOW_EVERY_S`` (``gateway.access.shared_keys``)."""

    @asynccontextmanager
    async def follow(app: Litestar) -> AsyncIterator[None]:
        if settings.keys_store is None or gate.keys is None:
            yield
            return
        shared = SharedKeys(
            settings.keys_store.reveal(),
            prefix=settings.state_prefix,
            timeout_s=settings.state_timeout_s,
        )
        follower = KeyFollower(shared, gate.keys, clock=clock)
        app.state.key_follower = follower
        await follower.sync()
        task = asyncio.create_task(follower.follow())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await shared.aclose()

    return follow


def app_from_env() -> Litestar:
    """The ASGI factory `gateway serve` hands to the server (each worker builds its own)."""
    configure_logging()  # in each worker: they are fresh interpreters
    return create_app(load_settings())
