"""``POST /generate``: the native contract (prompt + schema -> validated JSON).

A lean Litestar handler: it takes the raw body and decodes it with ``gateway.decoding`` (every
bad field named at once); its OpenAPI operation is described from the Structs
(``gateway.openapi.documented``)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Response, post

from gateway.decoding import decode_body
from gateway.dispatch import Job
from gateway.openapi import documented
from gateway.routes.common import AnyRequest, answer, facts_of, route, runtime_of
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
            request_id=facts.request_id,
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
    return answer(msgspec.json.encode(body), facts, outcome, started, checked.unenforced)
