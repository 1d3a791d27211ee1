"""The application factory.

>>> app = create_app(load_settings())                      # what `gateway serve` runs
>>> app = create_app(settings, transport=respx_transport)  # tests: every tier call mocked

The lifespan owns everything with a life of its own: one ``httpx.AsyncClient`` per tier,
the warmth tracker and its background tasks. Nothing is created at import time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Operation

from gateway.clock import Clock, SystemClock
from gateway.dispatch import Dispatcher
from gateway.lane import Lane
from gateway.logs import configure_logging
from gateway.observability import Metrics, request_id_middleware
from gateway.openapi import document
from gateway.problems import EXCEPTION_HANDLERS
from gateway.routes import generate, openai, ops
from gateway.runtime import Runtime
from gateway.schema_check import SchemaChecker
from gateway.settings import Settings, load_settings
from gateway.tierstate import TierStates
from gateway.upstream import TierClient


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
) -> GatewayApp:
    """Build the app; ``transport`` replaces the network for every tier, ``clock`` the time
    (tests)."""
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        clients = {
            name: TierClient(tier, settings, transport=transport)
            for name, tier in settings.tiers.items()
        }
        metrics = Metrics()
        warmth = TierStates.build(
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
        app.state.runtime = lane.runtime = runtime
        try:
            await runtime.start()
            yield
        finally:
            lane.runtime = None
            await runtime.aclose()

    lane = Lane(
        {
            "/generate": ("generate", generate.generate),
            "/v1/chat/completions": ("chat_completions", openai.chat_completions),
        },
        max_body_bytes=settings.max_body_bytes,
    )
    return GatewayApp(
        lane,
        {"/generate": generate.DOCS, "/v1/chat/completions": openai.DOCS},
        route_handlers=[*openai.HANDLERS, *ops.HANDLERS],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        middleware=[request_id_middleware],
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


class GatewayApp(Litestar):
    """Litestar, with the completion lane (``gateway.lane``) in front of its router: the two
    completion routes are answered before Litestar's machinery runs, everything else is
    Litestar's. The lane's routes are added to the OpenAPI document Litestar generates."""

    def __init__(self, lane: Lane, docs: dict[str, Operation], **config: Any) -> None:
        self.lane = lane
        self._lane_docs = docs
        super().__init__(**config)
        document(self.openapi_schema, docs)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in self.lane.routes:
            await self.lane(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def register(self, value: Any) -> None:  # type: ignore[override]  # as Litestar's
        super().register(value)
        document(self.openapi_schema, self._lane_docs)  # a new route rebuilt the document


def app_from_env() -> Litestar:
    """The ASGI factory `gateway serve` hands to the server (each worker builds its own)."""
    configure_logging()  # in each worker: they are fresh interpreters
    return create_app(load_settings())
