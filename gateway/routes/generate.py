"""``POST /generate``: the native contract (prompt + schema -> validated JSON)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Response, post
from litestar.openapi.datastructures import ResponseSpec

from gateway.decoding import decode_body
from gateway.dispatch import Job
from gateway.openapi import json_body_operation
from gateway.routes.common import AnyRequest, route, runtime_of, tier_headers
from gateway.schemas import GenerateRequest, GenerateResponse, Usage
from gateway.settings import Tier
from gateway.upstream import TierReply

# The model sees the schema too: constrained decoding guarantees the shape, the prompt makes
# the values sensible (a small model fills an unexplained schema with filler).
SYSTEM_PROMPT = (
    "Answer with one JSON value and nothing else. It must satisfy this JSON Schema:\n{schema}"
)


def upstream_payload(req: GenerateRequest, tier: Tier) -> bytes:
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
                "json_schema": {"name": "output", "schema": req.schema, "strict": True},
            },
        }
    )


@post(
    "/generate",
    status_code=200,
    operation_class=json_body_operation(GenerateRequest),
    responses={200: ResponseSpec(data_container=GenerateResponse, description="Validated output")},
    summary="Generate JSON that satisfies a schema",
)
async def generate(request: AnyRequest) -> Response[Any]:
    started = time.perf_counter()
    runtime = runtime_of(request)
    req = decode_body(await request.body(), GenerateRequest)
    checked = runtime.checker.check(req.schema)  # preflight: before any tier is chosen
    choice, mode, timeout = route(request, runtime, model=None)

    def check(reply: TierReply) -> Any:
        choice0 = reply.completion.choices[0]
        return checked.validate_output(choice0.message.content or "", choice0.finish_reason)

    outcome = await runtime.dispatcher.serve(
        Job(
            requested=choice.tier,
            mode=mode,
            client_timeout_s=timeout,
            payload=lambda tier: upstream_payload(req, tier),
            check=check,
            request_id=request.state.request_id,
        )
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
    return Response(
        content=msgspec.json.encode(body),
        media_type="application/json",
        headers=tier_headers(request, outcome, started, checked.unenforced),
    )


HANDLERS = [generate]
