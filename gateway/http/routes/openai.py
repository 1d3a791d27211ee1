"""``POST /v1/chat/completions`` (the OpenAI subset) and ``GET /v1/models``.

The official ``openai`` client works unchanged: point ``base_url`` at the gateway and name a
tier (``dev``, ``prod``) or a tier's model as ``model``. A ``json_schema`` response format is
preflighted and the answer validated exactly as on ``/generate``; the tier's JSON is then
forwarded as it came, so nothing is re-encoded on the hot path. The completion is served by
Litestar route handlers; a stream (``stream: true``) is a Litestar ``Stream`` of the relay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Response, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Stream

from gateway.errors import InvalidRequest, OutputInvalid
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
from gateway.http.streaming import SSE_HEADERS, StreamRelay
from gateway.routing.context_fit import check_fits
from gateway.routing.dispatch import Job
from gateway.routing.tier_client import TierReply
from gateway.schemas import (
    ChatCompletionRequest,
    JsonObjectFormat,
    JsonSchemaFormat,
    ModelCard,
    ModelList,
    TextPart,
)
from gateway.settings import Tier
from gateway.structured.preflight import CheckedSchema, SchemaChecker
from gateway.structured.tool_calls import ToolSet

EMBEDDED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct (embedded CPU tier)"


def json_object_of(text: str, finish_reason: str | None) -> Any:
    if finish_reason == "length":
        raise OutputInvalid("the output was truncated at max_tokens", reason="truncated", errors=[])
    try:
        value = msgspec.json.decode(text)
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


def refuse_unreadable_parts(req: ChatCompletionRequest) -> None:
    """The tiers' models read text only: an image or audio part would be dropped in silence
    by a text-only chat template, so it is refused by name."""
    errors = [
        {
            "path": f"$.messages[{i}].content[{j}].type",
            "message": f"content part type {part.__struct_config__.tag!r} is not supported: "
            "the tiers serve text-only models (send text parts)",
        }
        for i, message in enumerate(req.messages)
        if isinstance(message.content, list)
        for j, part in enumerate(message.content)
        if not isinstance(part, TextPart)
    ]
    if errors:
        raise InvalidRequest(
            f"{errors[0]['message']} ({errors[0]['path']})",
            param=errors[0]["path"][2:],
            errors=errors,
        )


OutputCheck = Callable[[str, str | None], Any]  # (content, finish_reason) -> parsed


def output_check(
    req: ChatCompletionRequest, checked: CheckedSchema | None, checker: SchemaChecker
) -> tuple[Callable[[TierReply], Any] | None, tuple[str, ...]]:
    """The check of the tier's answer (every choice), and the keywords checked afterwards.
    ``checked``: the response format's schema, preflighted (the output is validated against
    the client's schema even when the tier compiled a lowered one)."""
    unenforced: tuple[str, ...] = ()
    content: OutputCheck | None = None
    fmt = req.response_format
    if checked is not None:
        unenforced = checked.checked_after
        content = checked.validate_output
    elif isinstance(fmt, JsonObjectFormat):
        content = json_object_of
    tools = ToolSet.preflight(req.tools, req.tool_choice, checker)
    if content is None and tools is None:
        return None, unenforced

    def check(reply: TierReply) -> Any:
        outputs = []
        for choice in reply.completion.choices:
            calls = tools.check_calls(choice) if tools is not None else None
            if calls is not None:
                outputs.append(calls)
            elif content is not None:
                outputs.append(content(choice.message.content or "", choice.finish_reason))
        return outputs[0] if outputs else None

    return check, unenforced


@post(
    "/v1/chat/completions",
    status_code=200,
    summary="OpenAI-compatible chat completion (streamed with stream: true)",
    operation_id="ChatCompletions",
    operation_class=documented(
        ChatCompletionRequest, None, "The tier's chat.completion, as it came (or its SSE chunks)"
    ),
)
async def chat_completions(request: AnyRequest) -> Response[bytes] | Stream:
    started = time.perf_counter()
    runtime = runtime_of(request)
    facts = facts_of(request)
    req = decode_body(await request.body(), ChatCompletionRequest)
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest(  # vLLM refuses it too: refused here, before a tier is woken
            "stream_options is only allowed with stream: true",
            param="stream_options",
            errors=[{"path": "$.stream_options", "message": "needs stream: true"}],
        )
    refuse_unreadable_parts(req)
    checked: CheckedSchema | None = None
    fmt = req.response_format
    if isinstance(fmt, JsonSchemaFormat):
        checked = runtime.checker.check(fmt.json_schema.schema)
    check, unenforced = output_check(req, checked, runtime.checker)
    choice, mode, timeout = route(request, facts, runtime, model=req.model)  # after the preflight
    if checked is not None:
        apply_schema_mode(request, runtime, choice.tier, checked)
        if checked.lowered is not None and isinstance(fmt, JsonSchemaFormat):
            # the tier compiles the lowered schema; the output is checked against the client's
            lowered = msgspec.structs.replace(fmt.json_schema, schema=checked.lowered)
            req = msgspec.structs.replace(
                req, response_format=msgspec.structs.replace(fmt, json_schema=lowered)
            )
    shown = len(msgspec.json.encode(req.messages)) + len(msgspec.json.encode(fmt))
    check_fits(
        runtime.settings.tiers[choice.tier],
        text_bytes=shown,
        max_tokens=req.max_tokens,
        fields=("$.messages", "$.response_format"),
    )

    def payload(tier: Tier) -> bytes:
        return msgspec.json.encode(req.for_tier(tier.model))

    outcome = await serve(
        runtime,
        Job(
            requested=choice.tier,
            mode=mode,
            client_timeout_s=timeout,
            payload=payload,
            check=check,
            request_id=facts.request_id,
            grant=grant_of(request.scope),  # the API key (None: keys off)
            stream=bool(req.stream),
            retry_on_violation=bool(unenforced),
        ),
    )
    answered = answer(outcome.reply.body, facts, outcome, started, unenforced)
    if outcome.stream is None:
        return answered
    # Litestar's Stream cancels the relay when the client hangs up; the relay then closes
    # the tier's response.
    relay = StreamRelay(outcome.stream, check, path=request.url.path, request_id=facts.request_id)
    headers = {**answered.headers, **{k.decode(): v.decode() for k, v in SSE_HEADERS[1:]}}
    return Stream(relay.events(), media_type="text/event-stream", headers=headers)


def model_card(tier: Tier) -> ModelCard:
    return ModelCard(
        id=tier.name,
        tier=tier.name,
        upstream_model=EMBEDDED_MODEL
        if tier.kind == "local"
        else (tier.spec.model if tier.spec else tier.model),
        gpu=tier.spec.gpu if tier.spec and tier.kind != "local" else None,
        configured=tier.configured,
    )


@get("/v1/models", summary="The tiers, as models")
async def list_models(request: AnyRequest) -> ModelList:
    settings = runtime_of(request).settings
    return ModelList(data=[model_card(tier) for tier in settings.tiers.values()])


@get("/v1/models/{model_id:path}", summary="One tier, as a model")
async def get_model(request: AnyRequest, model_id: FromPath[str]) -> ModelCard:
    """By tier name or by the tier's model (``Qwen/Qwen2.5-7B-Instruct``): what ``model``
    accepts on a completion."""
    settings = runtime_of(request).settings
    wanted = model_id.lstrip("/")
    for tier in settings.tiers.values():
        if wanted in tier.aliases:
            return model_card(tier)
    raise NotFoundException(f"no model {wanted!r}; the tiers are {', '.join(settings.tiers)}")


HANDLERS = [chat_completions, list_models, get_model]
