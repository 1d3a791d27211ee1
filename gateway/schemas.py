"""Request and response bodies: the native ``/generate`` contract and the OpenAI subset.

Every body is decoded straight into these Structs (see ``gateway.decoding``); constraints
live in the annotations so that the OpenAPI schema and the validation are the same thing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

NonEmptyStr = Annotated[str, Meta(min_length=1)]
MaxTokens = Annotated[int, Meta(ge=1, le=8192)]
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]


class GenerateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``POST /generate``: the contract clients of the original Modal endpoint already use."""

    prompt: Annotated[str, Meta(min_length=1, description="Natural-language prompt")]
    schema: Annotated[dict[str, Any], Meta(description="JSON Schema the output must satisfy")]
    max_tokens: MaxTokens = 2048
    temperature: Temperature = 0.3
    top_p: TopP = 0.95


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class GenerateResponse(msgspec.Struct, frozen=True, kw_only=True):
    output: Any  # the parsed JSON, validated against the request's schema
    text: str  # the raw text the model produced
    tier: str  # the tier that served it
    model: str
    finish_reason: str | None
    usage: Usage
    latency_ms: float  # the tier's time, redirects included


# --- OpenAI chat completions (the subset the gateway forwards) ---------------------------


class TextPart(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    text: str


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None


class JsonSchemaSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextFormat(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    pass


class JsonObjectFormat(msgspec.Struct, frozen=True, tag_field="type", tag="json_object"):
    pass


class JsonSchemaFormat(msgspec.Struct, frozen=True, tag_field="type", tag="json_schema"):
    json_schema: JsonSchemaSpec


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaFormat


class ChatCompletionRequest(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True
):
    """``POST /v1/chat/completions``. Unknown fields are refused rather than dropped, so a
    client still sending vLLM's removed ``guided_json`` hears about it instead of getting
    unconstrained text."""

    model: NonEmptyStr
    messages: Annotated[list[Message], Meta(min_length=1)]
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    response_format: ResponseFormat | None = None
    n: Annotated[int, Meta(ge=1, le=1)] | None = None
    stream: Literal[False] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] | None = None
    user: str | None = None


class ChatMessageOut(msgspec.Struct, frozen=True):
    role: str = "assistant"
    content: str | None = None


class ChatChoice(msgspec.Struct, frozen=True):
    index: int = 0
    message: ChatMessageOut = ChatMessageOut()
    finish_reason: str | None = None


class ChatCompletion(msgspec.Struct, frozen=True):
    """What the gateway reads of a tier's answer (unknown fields are kept in the raw bytes)."""

    id: str = ""
    model: str = ""
    choices: list[ChatChoice] = []
    usage: Usage | None = None


class ModelCard(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "tier-gateway"
    tier: str
    upstream_model: str
    gpu: str | None = None
    configured: bool


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: str = "list"
