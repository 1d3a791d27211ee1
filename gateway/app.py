"""The application factory.

>>> app = create_app(load_settings())                      # what `gateway serve` runs
>>> app = create_app(settings, transport=respx_transport)  # tests: every tier call mocked

The lifespan owns everything with a life of its own: one tier client per tier, the warmth
tracker and its background tasks. Nothing is created at import time.

Every route, the two completion routes included, is a Litestar route handler: the edge
middleware (request id, metric, log line, cancellation when the client hangs up), allowed
hosts and CORS (``[server]`` in the settings), the exception handlers
(``gateway.http.problems``) and the generated OpenAPI document apply to all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from litestar import Litestar
from litestar.config.allowed_hosts import AllowedHostsConfig
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin

from gateway.access.shared_keys import KeyFollower, SharedKeys
from gateway.clock import Clock, SystemClock, cancel_and_wait
from gateway.http.auth import Gate
from gateway.http.observability import Metrics, edge_middleware
from gateway.http.problems import EXCEPTION_HANDLERS
from gateway.http.routes import generate, openai, ops
from gateway.logs import configure_logging
from gateway.routing.dispatch import Dispatcher
from gateway.routing.tier_client import TierClient
from gateway.routing.warmth_service import WarmthService
from gateway.runtime import Runtime
from gateway.settings import Cors, ServerSettings, Settings, load_settings
from gateway.structured.preflight import SchemaChecker


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
) -> Litestar:
    """Build the app; ``transport`` replaces the network for every tier, ``clock`` the time
    (tests)."""
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
        allowed_hosts=allowed_hosts_config(settings.server),
        cors_config=cors_config(settings.server.cors),
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


def allowed_hosts_config(server: ServerSettings) -> AllowedHostsConfig | None:
    """Litestar's Host check (a 400 for any other), or None: every host (the default)."""
    if not server.allowed_hosts:
        return None
    # No www. redirect: an API answers or refuses, and a 301 would make clients re-send
    # a prompt to another name.
    return AllowedHostsConfig(allowed_hosts=list(server.allowed_hosts), www_redirect=False)


def cors_config(cors: Cors) -> CORSConfig | None:
    """Litestar's CORS, or None: no CORS headers (the default). It wraps the whole app, so a
    preflight is answered before routing and before the key check: browsers send no key on
    one. Keys travel in ``Authorization``, never in cookies: no credentialed CORS."""
    if not cors.enabled:
        return None
    return CORSConfig(
        allow_origins=list(cors.allow_origins),
        allow_methods=["GET", "POST"],  # every route the gateway has
        allow_headers=list(cors.allow_headers),
        expose_headers=list(cors.expose_headers),
        allow_credentials=False,
        max_age=cors.max_age_s,
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
            await cancel_and_wait(task)  # a cancel lost in a Redis call is sent again
            await shared.aclose()

    return follow


def app_from_env() -> Litestar:
    """The ASGI factory `gateway serve` hands to the server (each worker builds its own)."""
    configure_logging()  # in each worker: they are fresh interpreters
    return create_app(load_settings())
