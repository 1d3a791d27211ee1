"""Operations: liveness, readiness, per-tier status, warm-up; and the request-id middleware."""

from __future__ import annotations

import re
import uuid
from typing import Any

import msgspec
from litestar import Response, get, post
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.decoding import decode_body
from gateway.errors import UnknownTier
from gateway.routes.common import AnyRequest, runtime_of

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Give every request an id (the client's ``X-Request-Id`` when it is sane), pass it to
    the tier and put it on the answer; also put ``X-Model-Tier-Requested`` on problem answers
    once routing has decided it."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                requested = state.get("tier_requested")
                if requested and not any(k == b"x-model-tier-requested" for k, _ in headers):
                    headers.append((b"x-model-tier-requested", requested.encode()))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_id)

    return middleware


@get("/health", summary="Liveness: the process answers (no tier is called)")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", summary="Readiness: config loaded and at least one tier usable")
async def ready(request: AnyRequest) -> Response[Any]:
    runtime = runtime_of(request)
    tiers = {name: runtime.warmth.view(name) for name in runtime.settings.tiers}
    usable = [name for name, view in tiers.items() if view.usable]
    body = {
        "status": "ready" if usable else "unavailable",
        "tiers": {name: {"usable": view.usable, "warm": view.warm} for name, view in tiers.items()},
    }
    return Response(content=body, status_code=200 if usable else 503)


@get("/status", summary="Per-tier warmth, ETA, latency, errors and counters")
async def status(request: AnyRequest) -> Response[Any]:
    runtime = runtime_of(request)
    return Response(content=msgspec.json.encode(runtime.status()), media_type="application/json")


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
    tier_status = runtime.status()[req.tier]
    return Response(
        content=msgspec.json.encode(tier_status),
        media_type="application/json",
        status_code=200 if warm or runtime.warmth.view(req.tier).warm else 202,
    )


HANDLERS = [health, ready, status, warmup]
