"""Operations: liveness, readiness, per-tier status, warm-up, metrics."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response, get, post

from gateway.errors import UnknownTier
from gateway.http.decoding import decode_body
from gateway.http.routes.common import AnyRequest, runtime_of


@get("/health", summary="Liveness: the process answers (no tier is called)")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", summary="Readiness: config loaded and at least one tier usable")
async def ready(request: AnyRequest) -> Response[Any]:
    ready, body = await runtime_of(request).warmth.readiness()
    follower = getattr(request.app.state, "key_follower", None)
    if follower is not None:  # keys shared through Redis: a blip keeps the last keys read
        body["key_store"] = follower.health()
    return Response(content=body, status_code=200 if ready else 503)


@get("/status", summary="Per-tier warmth, ETA, latency, errors and counters")
async def status(request: AnyRequest) -> Response[Any]:
    runtime = runtime_of(request)
    return Response(
        content=msgspec.json.encode(await runtime.status()), media_type="application/json"
    )


class WarmupRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tier: str
    wait: bool = False
    timeout_s: float | None = None  # with wait: how long to hold (bounded by the tier's cold)


@post("/warmup", status_code=202, summary="Start a tier's warm-up (single-flight)")
async def warmup(request: AnyRequest) -> Response[Any]:
    runtime = runtime_of(request)
    body = await request.body()
    req = decode_body(body or b"{}", WarmupRequest)
    settings = runtime.settings
    if req.tier not in settings.tiers:
        raise UnknownTier(
            f"no tier named {req.tier!r}; valid: {', '.join(settings.tiers)}",
            valid=list(settings.tiers),
        )
    runtime.warmth.trigger_warm_up(req.tier)
    warm = False
    if req.wait:
        cold = settings.tiers[req.tier].timeouts.cold
        limit = min(req.timeout_s, cold) if req.timeout_s else cold
        warm = await runtime.warmth.wait_warm(req.tier, limit)
    tier_status = (await runtime.status())[req.tier]
    return Response(
        content=msgspec.json.encode(tier_status),
        media_type="application/json",
        status_code=200 if warm or (await runtime.warmth.view(req.tier)).warm else 202,
    )


@get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: AnyRequest) -> Response[bytes]:
    body = runtime_of(request).metrics.render()
    return Response(content=body, media_type="text/plain; version=0.0.4; charset=utf-8")


HANDLERS = [health, ready, status, warmup, metrics]
