"""The OpenAI-compatible wire format, shaped like vLLM's server (the GPU tiers run vLLM, and
the gateway must not care which tier answered).

Requests decode with msgspec (unknown fields are ignored, as vLLM ignores them); responses
and errors encode to the same members vLLM sends. vLLM's error envelope::

    {"error": {"message": "...", "type": "BadRequestError", "param": null, "code": 400}}

``code`` is the HTTP status as an integer; ``type`` is ``BadRequestError`` (400),
``NotFoundError`` (404), ``InternalServerError`` (500), else the status phrase
(``Too Many Requests``, ``Service Unavailable``), as vLLM's ``create_error_response`` does.
"""

from __future__ import annotations

import time
import uuid
from http import HTTPStatus
from typing import Any, Literal

import msgspec

_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


class TextPart(msgspec.Struct, frozen=True):
    type: Literal["text"]
    text: str


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    class Function(msgspec.Struct, frozen=True):
        name: str
        arguments: str  # JSON text, as OpenAI sends it

    id: str = ""
    type: str = "function"
    function: Function


class FunctionDef(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


class Tool(msgspec.Struct, frozen=True):
    function: FunctionDef
    type: Literal["function"] = "function"


class NamedToolChoice(msgspec.Struct, frozen=True):
    class Name(msgspec.Struct, frozen=True):
        name: str

    function: Name
    type: Literal["function"] = "function"


class StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class ChatMessage(msgspec.Struct, frozen=True):
    role: str
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class JsonSchemaFormat(msgspec.Struct, frozen=True):
    name: str = "response"
    schema: dict[str, Any] | bool | None = None
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, frozen=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionRequest(msgspec.Struct, frozen=True):
    messages: list[ChatMessage]
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None  # OpenAI's newer name; wins when both are set
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    response_format: ResponseFormat | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # one call per turn here, whatever it says
    ignore_eos: bool = False  # vLLM extension: keep generating past end-of-turn (text only)


class RequestRejected(Exception):
    """A request the server will not run; rendered as a vLLM error body."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.headers = headers or {}


class ErrorInfo(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None
    code: int


class ErrorResponse(msgspec.Struct, frozen=True):
    error: ErrorInfo


def error_body(status: int, message: str, param: str | None = None) -> ErrorResponse:
    kind = _ERROR_TYPES.get(status) or HTTPStatus(status).phrase
    return ErrorResponse(ErrorInfo(message=message, type=kind, param=param, code=status))


class AssistantMessage(msgspec.Struct, frozen=True):
    content: str | None
    role: str = "assistant"
    refusal: None = None
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    reasoning_content: None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class Choice(msgspec.Struct, frozen=True):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    stop_reason: str | int | None = None
    logprobs: None = None


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: None = None


class ChatCompletionResponse(msgspec.Struct, frozen=True):
    model: str
    choices: list[Choice]
    usage: Usage
    id: str = msgspec.field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: str = "chat.completion"
    created: int = msgspec.field(default_factory=lambda: int(time.time()))
    system_fingerprint: None = None


class ModelCard(msgspec.Struct, frozen=True):
    id: str
    max_model_len: int
    created: int
    object: str = "model"
    owned_by: str = "tier-gateway"
    root: str | None = None


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: str = "list"
