"""What both completion surfaces share: the request's facts and routing headers, and the
answer's tier headers. Handlers stay thin: read the body, decode, route, hand a Job to the
dispatcher, encode."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, Response

from gateway.errors import ClientError, OutputInvalid
from gateway.http.observability import RequestFacts, facts_in
from gateway.routing.dispatch import Job, Outcome
from gateway.routing.plan import Choice, choose_tier, parse_fallback_header, parse_timeout_header
from gateway.settings import FallbackMode
from gateway.structured.preflight import CheckedSchema

if TYPE_CHECKING:  # the app state the handlers reach (gateway.runtime holds the edge's metrics)
    from gateway.runtime import Runtime

AnyRequest = Request[Any, Any, Any]
JSON = "application/json"
# The request headers a completion handler reads (ASGI gives names lower-cased, as bytes).
ROUTING_HEADERS = frozenset(
    {b"x-model-tier", b"x-tier-fallback", b"x-request-timeout", b"x-schema-mode"}
)


def runtime_of(request: AnyRequest) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def facts_of(request: AnyRequest) -> RequestFacts:
    """Where the handler leaves what the metric and the log line say
    (``gateway.http.observability``)."""
    return facts_in(request.scope)


def route(
    request: AnyRequest, facts: RequestFacts, runtime: Runtime, *, model: str | None
) -> tuple[Choice, FallbackMode, float | None]:
    """Tier, fallback mode and client deadline from the headers (and ``model``)."""
    # One pass over the raw headers: cheaper than building Litestar's Headers for three.
    sent = {
        k.decode(): v.decode("latin-1") for k, v in request.scope["headers"] if k in ROUTING_HEADERS
    }
    settings = runtime.settings
    choice = choose_tier(
        header=sent.get("x-model-tier"), model=model, env=settings.env, settings=settings
    )
    facts.tier_requested = choice.tier
    tier = settings.tiers[choice.tier]
    mode = parse_fallback_header(sent.get("x-tier-fallback"), tier)
    timeout = parse_timeout_header(sent.get("x-request-timeout"))
    return choice, mode, timeout


def answer(
    body: bytes,
    facts: RequestFacts,
    outcome: Outcome,
    started: float,
    unenforced: tuple[str, ...],
) -> Response[bytes]:
    """The 200: the JSON body with ``X-Model-Tier-*``, ``X-Fallback-Reason`` and the gateway's
    own overhead in ms. Also leaves the facts for the metrics and the log line."""
    facts.tier_served = outcome.served
    facts.fallback_reason = outcome.reason
    facts.upstream_s = outcome.reply.latency_s
    elapsed = time.perf_counter() - started
    overhead = max(elapsed - outcome.reply.latency_s, 0.0) * 1000
    headers = {
        "x-model-tier-requested": outcome.requested,
        "x-model-tier-served": outcome.served,
        "x-gateway-overhead-ms": f"{overhead:.2f}",
    }
    if outcome.reason is not None:
        headers["x-fallback-reason"] = outcome.reason
    if unenforced:
        # Keywords the tier did not enforce (XGrammar skips them, or the schema was lowered
        # without them): the gateway checked them afterwards.
        headers["x-schema-checked-after"] = ", ".join(unenforced)
    return Response(content=body, media_type=JSON, headers=headers)


def apply_schema_mode(
    request: AnyRequest, runtime: Runtime, tier: str, checked: CheckedSchema
) -> None:
    """``X-Schema-Mode: strict`` (or the tier's ``schema_mode``) refuses a schema that needs
    lowering with today's 422; ``lower`` (the default) serves it lowered."""
    value = next(
        (v.decode("latin-1") for k, v in request.scope["headers"] if k == b"x-schema-mode"), None
    )
    mode = runtime.settings.tiers[tier].schema_mode if value is None else value.strip().lower()
    if mode not in ("lower", "strict"):
        raise ClientError(
            f"X-Schema-Mode must be lower or strict, not {value!r}",
            errors=[{"path": "header:X-Schema-Mode", "message": "expected lower|strict"}],
        )
    if mode == "strict":
        checked.require_strict()


async def serve(runtime: Runtime, job: Job) -> Outcome:
    """Dispatch ``job``, counting outputs that break a keyword checked after generation
    (``job.retry_on_violation``): each retry, and the break still there at the end (the 502)."""
    metrics = runtime.metrics
    if job.retry_on_violation:
        job = msgspec.structs.replace(
            job, on_retry=lambda error: metrics.observe_schema_break(error, final=False)
        )
    try:
        return await runtime.dispatcher.serve(job)
    except OutputInvalid as error:
        if job.retry_on_violation and error.members.get("reason") == "schema-violation":
            metrics.observe_schema_break(error, final=True)
        raise
