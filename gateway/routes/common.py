"""What both completion surfaces share: reading the routing headers, and the answer's
tier headers. Handlers stay thin: decode, route, hand a Job to the dispatcher, encode."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request

from gateway.dispatch import Outcome
from gateway.routing import Choice, choose_tier, parse_fallback_header, parse_timeout_header
from gateway.runtime import Runtime
from gateway.settings import FallbackMode

AnyRequest = Request[Any, Any, Any]


def runtime_of(request: AnyRequest) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def route(
    request: AnyRequest, runtime: Runtime, *, model: str | None
) -> tuple[Choice, FallbackMode, float | None]:
    """Tier, fallback mode and client deadline from the headers (and ``model``)."""
    settings = runtime.settings
    headers = request.headers
    choice = choose_tier(
        header=headers.get("x-model-tier"), model=model, env=settings.env, settings=settings
    )
    request.state.tier_requested = choice.tier
    tier = settings.tiers[choice.tier]
    mode = parse_fallback_header(headers.get("x-tier-fallback"), tier)
    timeout = parse_timeout_header(headers.get("x-request-timeout"))
    return choice, mode, timeout


def tier_headers(
    request: AnyRequest, outcome: Outcome, started: float, unenforced: tuple[str, ...]
) -> dict[str, str]:
    """``X-Model-Tier-*`` and ``X-Fallback-Reason``; the gateway's own overhead in ms. Also
    leaves the facts in the request's state for the metrics and the log line."""
    state = request.state
    state.tier_served = outcome.served
    state.fallback_reason = outcome.reason
    state.upstream_s = outcome.reply.latency_s
    elapsed = time.perf_counter() - started
    headers = {
        "X-Model-Tier-Requested": outcome.requested,
        "X-Model-Tier-Served": outcome.served,
        "X-Gateway-Overhead-Ms": f"{max(elapsed - outcome.reply.latency_s, 0.0) * 1000:.2f}",
    }
    if outcome.reason is not None:
        headers["X-Fallback-Reason"] = outcome.reason
    if unenforced:
        # Keywords XGrammar parses but does not enforce: the gateway checked them afterwards.
        headers["X-Schema-Checked-After"] = ", ".join(unenforced)
    return headers
