"""``POST /v1/chat/completions`` (the OpenAI subset) and ``GET /v1/models``.

The official ``openai`` client works unchanged: point ``base_url`` at the gateway and name a
tier (``dev``, ``prod``) or a tier's model as ``model``. A ``json_schema`` response format is
preflighted and the answer validated exactly as on ``/generate``; the tier's JSON is then
forwarded as it came, so nothing is re-encoded on the hot path. Like ``/generate``, the
completion handler takes the raw body and decodes it with ``gateway.decoding``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Response, get, post

from gateway.context_fit import check_fits
from gateway.decoding import decode_body
from gateway.dispatch import Job
from gateway.errors import OutputInvalid
from gateway.openapi import documented
from gateway.routes.common import (
    AnyRequest,
    answer,
    apply_schema_mode,
    facts_of,
    route,
    runtime_of,
    schema_retry_hooks,
)
from gateway.schema_check import CheckedSchema
from gateway.schemas import (
    ChatCompletionRequest,
    JsonObjectFormat,
    JsonSchemaFormat,
    ModelCard,
    ModelList,
)
from gateway.settings import Tier
from gateway.upstream import TierReply

EMBEDDED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct (embedded CPU tier)"


def check_json_object(reply: TierReply) -> Any:
    first = reply.completion.choices[0]
    if first.finish_reason == "length":
        raise OutputInvalid("the output was truncated at max_tokens", reason="truncated", errors=[])
    try:
        value = msgspec.json.decode(first.message.content or "")
    except msgspec.DecodeError as exc:
        raise OutputInvalid(
            f"the output is not JSON: {exc}", reason="invalid-json", errors=[]
        ) from None
    if not isinstance(value, dict):
        raise OutputInvalid(
            "json_object asks for a JSON object",
            reason="schema-violation",
            errors=[{"path": "$", "keyword": "type", "message": "expected an object"}],
        )
    return value


@post(
    "/v1/chat/completions",
    status_code=200,
    summary="OpenAI-compatible chat completion (non-streaming)",
    operation_id="ChatCompletions",
    operation_class=documented(
        ChatCompletionRequest, None, "The tier's chat.completion, as it came"
    ),
)
async def chat_completions(request: AnyRequest) -> Response[bytes]:
    started = time.perf_counter()
    runtime = runtime_of(request)
    facts = facts_of(request)
    req = decode_body(await request.body(), ChatCompletionRequest)
    unenforced: tuple[str, ...] = ()
    check = None
    checked: CheckedSchema | None = None
    fmt = req.response_format
    if isinstance(fmt, JsonSchemaFormat) and fmt.json_schema.schema is not None:
        checked = runtime.checker.check(fmt.json_schema.schema)
        unenforced = checked.checked_after
        if checked.lowered is not None:  # the tier compiles the lowered schema
            lowered = msgspec.structs.replace(fmt.json_schema, schema=checked.lowered)
            req = msgspec.structs.replace(
                req, response_format=msgspec.structs.replace(fmt, json_schema=lowered)
            )

        def check(reply: TierReply) -> Any:
            first = reply.completion.choices[0]
            return checked.validate_output(first.message.content or "", first.finish_reason)

    elif isinstance(fmt, JsonObjectFormat):
        check = check_json_object
    choice, mode, timeout = route(request, facts, runtime, model=req.model)  # after the preflight
    if checked is not None:
        apply_schema_mode(request, runtime, choice.tier, checked)
    shown = len(msgspec.json.encode(req.messages)) + len(msgspec.json.encode(fmt))
    check_fits(
        runtime.settings.tiers[choice.tier],
        text_bytes=shown,
        max_tokens=req.max_tokens,
        fields=("$.messages", "$.response_format"),
    )
    on_retry, on_final = schema_retry_hooks(runtime)

    def payload(tier: Tier) -> bytes:
        return msgspec.json.encode(msgspec.structs.replace(req, model=tier.model))

    try:
        outcome = await runtime.dispatcher.serve(
            Job(
                requested=choice.tier,
                mode=mode,
                client_timeout_s=timeout,
                payload=payload,
                check=check,
                request_id=facts.request_id,
                retry_on_violation=bool(unenforced),
                on_retry=on_retry,
            )
        )
    except OutputInvalid as error:
        if unenforced and error.members.get("reason") == "schema-violation":
            on_final(error)
        raise
    return answer(outcome.reply.body, facts, outcome, started, unenforced)


@get("/v1/models", summary="The tiers, as models")
async def list_models(request: AnyRequest) -> ModelList:
    settings = runtime_of(request).settings
    return ModelList(
        data=[
            ModelCard(
                id=tier.name,
                tier=tier.name,
                upstream_model=EMBEDDED_MODEL
                if tier.kind == "local"
                else (tier.spec.model if tier.spec else tier.model),
                gpu=tier.spec.gpu if tier.spec and tier.kind != "local" else None,
                configured=tier.configured,
            )
            for tier in settings.tiers.values()
        ]
    )


HANDLERS = [chat_completions, list_models]
