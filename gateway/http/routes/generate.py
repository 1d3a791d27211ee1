"""``POST /generate``: the native contract (prompt + schema -> validated JSON).

A lean Litestar handler: it takes the raw body and decodes it with ``gateway.http.decoding`` (every
bad field named at once); its OpenAPI operation is described from the Structs
(``gateway.http.openapi.documented``)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Response, post

from gateway.http.auth import grant_of
from gateway.http.decoding import decode_body
from gateway.http.openapi import documented
from gateway.http.routes.common import (
    AnyRequest,
    answer,
    apply_schema_mode,
    facts_of,
    route,
    runtime_of,
    serve,
)
from gateway.routing.context_fit import check_fits
from gateway.routing.dispatch import Job
from gateway.routing.tier_client import TierReply
from gateway.schemas import GenerateRequest, GenerateResponse, Usage
from gateway.settings import Tier

# The model sees the schema too: constrained decoding guarantees the shape, the prompt makes
# the values sensible (a small model fills an unexplained schema with filler).
SYSTEM_PROMPT = (
    "Answer with one JSON value and nothing else. It must satisfy this JSON Schema:\n{schema}"
)


def upstream_payload(req: GenerateRequest, tier: Tier, tier_schema: Any = None) -> bytes:
    """The chat request; ``tier_schema``: the lowered schema XGrammar compiles (the model is
    shown the client's own schema, whose constraints it should still follow)."""
    schema_text = msgspec.json.encode(req.schema).decode()
    return msgspec.json.encode(
        {
            "model": tier.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT.format(schema=schema_text)},
                {"role": "user", "content": req.prompt},
            ],
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "output",
                    "schema": req.schema if tier_schema is None else tier_schema,
                    "strict": True,
                },
            },
        }
    )


@post(
    "/generate",
    status_code=200,
    summary="Generate JSON that satisfies a schema",
    operation_id="Generate",
    operation_class=documented(GenerateRequest, GenerateResponse, "Validated output"),
)
async def generate(request: AnyRequest) -> Response[bytes]:
    started = time.perf_counter()
    runtime = runtime_of(request)
    facts = facts_of(request)
    req = decode_body(await request.body(), GenerateRequest)
    checked = runtime.checker.check(req.schema)  # preflight: before any tier is chosen
    choice, mode, timeout = route(request, facts, runtime, model=None)
    apply_schema_mode(request, runtime, choice.tier, checked)
    shown = len(req.prompt.encode()) + len(SYSTEM_PROMPT) + len(msgspec.json.encode(req.schema))
    check_fits(runtime.settings.tiers[choice.tier], text_bytes=shown, max_tokens=req.max_tokens)

    def check(reply: TierReply) -> Any:
        choice0 = reply.completion.choices[0]
        return checked.validate_output(choice0.message.content or "", choice0.finish_reason)

    outcome = await serve(
        runtime,
        Job(
            requested=choice.tier,
            mode=mode,
            client_timeout_s=timeout,
            payload=lambda tier: upstream_payload(req, tier, checked.tier_schema),
            check=check,
            request_id=facts.request_id,
            grant=grant_of(request.scope),  # the API key (None: keys off)
            retry_on_violation=bool(checked.checked_after),
        ),
    )
    completion = outcome.reply.completion
    first = completion.choices[0]
    body = GenerateResponse(
        output=outcome.output,
        text=first.message.content or "",
        tier=outcome.served,
        model=completion.model or runtime.settings.tiers[outcome.served].model,
        finish_reason=first.finish_reason,
        usage=completion.usage or Usage(),
        latency_ms=round(outcome.reply.latency_s * 1000, 2),
    )
    return answer(msgspec.json.encode(body), facts, outcome, started, checked.checked_after)
