"""What both completion surfaces share: the request as the lane hands it over (``Call``),
reading the routing headers, and the answer's tier headers. Handlers stay thin: decode,
route, hand a Job to the dispatcher, encode."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from litestar import Request

from gateway.dispatch import Outcome
from gateway.routing import Choice, choose_tier, parse_fallback_header, parse_timeout_header
from gateway.runtime import Runtime
from gateway.settings import FallbackMode

AnyRequest = Request[Any, Any, Any]
# The request headers a completion handler reads (ASGI gives names lower-cased, as bytes).
ROUTING_HEADERS = frozenset({b"x-model-tier", b"x-tier-fallback", b"x-request-timeout"})


class Call:
    """One completion request: what the handler reads, and the facts it leaves for the
    lane's metrics and log line."""

    __slots__ = (
        "body",
        "fallback_reason",
        "headers",
        "path",
        "problem",
        "request_id",
        "tier_requested",
        "tier_served",
        "upstream_s",
    )

    def __init__(self, path: str, headers: dict[bytes, bytes], body: bytes, request_id: str):
        self.path = path
        self.headers = headers  # only ROUTING_HEADERS
        self.body = body
        self.request_id = request_id
        self.tier_requested: str | None = None
        self.tier_served: str | None = None
        self.fallback_reason: str | None = None
        self.upstream_s: float | None = None
        self.problem: str | None = None

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


class Answer:
    """A handler's 200: the JSON body and the headers beside it, or a stream (SSE: the
    headers carry its content-type) whose pieces go out as they come."""

    __slots__ = ("body", "headers", "stream")

    def __init__(
        self,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        stream: AsyncGenerator[bytes] | None = None,
    ) -> None:
        self.body = body
        self.headers = headers
        self.stream = stream


def route(
    call: Call, runtime: Runtime, *, model: str | None
) -> tuple[Choice, FallbackMode, float | None]:
    """Tier, fallback mode and client deadline from the headers (and ``model``)."""
    settings = runtime.settings
    choice = choose_tier(
        header=call.header(b"x-model-tier"), model=model, env=settings.env, settings=settings
    )
    call.tier_requested = choice.tier
    tier = settings.tiers[choice.tier]
    mode = parse_fallback_header(call.header(b"x-tier-fallback"), tier)
    timeout = parse_timeout_header(call.header(b"x-request-timeout"))
    return choice, mode, timeout


def tier_headers(
    call: Call, outcome: Outcome, started: float, unenforced: tuple[str, ...]
) -> list[tuple[bytes, bytes]]:
    """``X-Model-Tier-*`` and ``X-Fallback-Reason``; the gateway's own overhead in ms. Also
    leaves the facts in the call for the metrics and the log line."""
    call.tier_served = outcome.served
    call.fallback_reason = outcome.reason
    call.upstream_s = outcome.reply.latency_s
    elapsed = time.perf_counter() - started
    overhead = max(elapsed - outcome.reply.latency_s, 0.0) * 1000
    headers = [
        (b"x-model-tier-requested", outcome.requested.encode()),
        (b"x-model-tier-served", outcome.served.encode()),
        (b"x-gateway-overhead-ms", b"%.2f" % overhead),
    ]
    if outcome.reason is not None:
        headers.append((b"x-fallback-reason", outcome.reason.encode()))
    if unenforced:
        # Keywords XGrammar parses but does not enforce: the gateway checked them afterwards.
        headers.append((b"x-schema-checked-after", ", ".join(unenforced).encode()))
    return headers


def runtime_of(request: AnyRequest) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
