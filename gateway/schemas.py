"""Request and response bodies: the native ``/generate`` contract and the OpenAI subset.

Every body is decoded straight into these Structs (see ``gateway.http.decoding``); constraints
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


# --- OpenAI chat completions --------------------------------------------------------------
#
# What a client sends falls into four kinds (docs/api.md lists them): fields the tier
# understands are forwarded; bookkeeping the gateway has no use for is accepted and dropped
# (``IGNORED_FIELDS``); fields that would silently change meaning are refused with a hint
# (``gateway.http.decoding.HINTS``); values the tier would refuse are refused here first, so no
# cold GPU is woken for a 400.

Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]  # vLLM's `seed` is a torch.long
FunctionName = Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]  # OpenAI's rule


class TextPart(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    text: str


# Parts a text-only model cannot read. They decode, so that the refusal can name the part
# type (``routes.openai`` answers 400), instead of a generic "invalid union" message.
class ImageUrlPart(msgspec.Struct, frozen=True, tag_field="type", tag="image_url"):
    pass


class InputAudioPart(msgspec.Struct, frozen=True, tag_field="type", tag="input_audio"):
    pass


class FilePart(msgspec.Struct, frozen=True, tag_field="type", tag="file"):
    pass


class RefusalPart(msgspec.Struct, frozen=True, tag_field="type", tag="refusal"):
    pass


ContentPart = TextPart | ImageUrlPart | InputAudioPart | FilePart | RefusalPart


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call, in an assistant message sent back or in a tier's answer."""

    id: str = ""
    type: str = "function"
    function: FunctionCall


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A chat message. Besides the fields the tier reads, every field the openai SDK puts in
    a message it returned (``refusal``, ``audio``, ``annotations``, ``function_call``,
    ``reasoning_content``...) is accepted, so ``messages.append(resp.choices[0].message)``
    works; those are records of the last turn and are not forwarded (``forwarded``)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None
    # Returned by the SDK / vLLM; accepted back, dropped before the tier.
    refusal: str | None = None
    function_call: FunctionCall | None = None
    audio: dict[str, Any] | None = None
    annotations: list[Any] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    parsed: Any = None  # the SDK's own: `.parse()` keeps the parsed model in the message

    def forwarded(self) -> Message:
        """The message as the tier gets it: without the returned-only records."""
        if (
            self.refusal is None
            and self.function_call is None
            and self.audio is None
            and self.annotations is None
            and self.reasoning_content is None
            and self.reasoning is None
            and self.parsed is None
            and self.tool_calls != []
        ):
            return self
        return msgspec.structs.replace(
            self,
            refusal=None,
            function_call=None,
            audio=None,
            annotations=None,
            reasoning_content=None,
            reasoning=None,
            parsed=None,
            tool_calls=self.tool_calls or None,  # vLLM sends []; an empty list means none
        )


class JsonSchemaSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    # Required here though OpenAI's type has it optional: vLLM refuses a json_schema format
    # without one, and the gateway says so before a tier is woken.
    schema: dict[str, Any]
    description: str | None = None
    strict: bool | None = None


class TextFormat(msgspec.Struct, frozen=True, tag_field="type", tag="text"):
    pass


class JsonObjectFormat(msgspec.Struct, frozen=True, tag_field="type", tag="json_object"):
    pass


class JsonSchemaFormat(msgspec.Struct, frozen=True, tag_field="type", tag="json_schema"):
    json_schema: JsonSchemaSpec


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaFormat


class FunctionDef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema, preflighted like response_format
    strict: bool | None = None


class FunctionTool(msgspec.Struct, frozen=True, tag_field="type", tag="function"):
    function: FunctionDef


class ToolChoiceFunction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: FunctionName


class NamedToolChoice(msgspec.Struct, frozen=True, tag_field="type", tag="function"):
    function: ToolChoiceFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class StreamOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # OpenAI's padding against side channels: moot here


# Bookkeeping clients send for OpenAI's own platform (dashboards, retention, billing,
# caching): accepted, never forwarded; the tier has no use for them.
IGNORED_FIELDS = (
    "metadata",
    "store",
    "service_tier",
    "user",
    "prompt_cache_key",
    "safety_identifier",
    "reasoning_effort",  # the tiers' models do not reason; no knob to turn
    "verbosity",
)


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
    seed: Int64 | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    response_format: ResponseFormat | None = None
    # A tier container runs at most 16 sequences at once (tiers.toml max_concurrency).
    n: Annotated[int, Meta(ge=1, le=16)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    logit_bias: dict[str, Annotated[float, Meta(ge=-100.0, le=100.0)]] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # IGNORED_FIELDS
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    user: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None

    def for_tier(self, model: str) -> ChatCompletionRequest:
        """What the tier gets: its model name, no bookkeeping, messages as it reads them."""
        return msgspec.structs.replace(
            self,
            model=model,
            messages=[m.forwarded() for m in self.messages],
            metadata=None,
            store=None,
            service_tier=None,
            user=None,
            prompt_cache_key=None,
            safety_identifier=None,
            reasoning_effort=None,
            verbosity=None,
        )


class ChatMessageOut(msgspec.Struct, frozen=True):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


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
