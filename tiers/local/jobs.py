"""What one generation job is, and how a chat request becomes one.

>>> spec = JobSpec.from_request(msgspec.json.decode(body, type=ChatCompletionRequest))
>>> prepared = engine.prepare(spec.messages, spec.grammar)            # tokens + grammar
>>> sampling = spec.sampling(len(prepared.prompt_ids), max_model_len=2048)

Pure data and checks: nothing here imports torch, so the server can validate a request
(and answer 400) while the model is still loading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tiers.local.protocol import ChatCompletionRequest, RequestRejected
from tiers.local.tools import ToolPlan, render_messages


class GrammarError(ValueError):
    """The requested schema cannot be compiled into a grammar (a client error)."""


class GenerationCancelled(Exception):
    """The job's cancel event was set (client gone, server stopping) after ``tokens``."""

    def __init__(self, tokens: int = 0, seconds: float = 0.0) -> None:
        super().__init__(f"cancelled after {tokens} tokens")
        self.tokens = tokens
        self.seconds = seconds


@dataclass(frozen=True)
class GrammarRequest:
    """What the output must match: a JSON schema (as JSON text) or any JSON object."""

    kind: str  # "json_schema" | "json_object"
    schema: str = ""

    @classmethod
    def json_schema(cls, schema: str) -> GrammarRequest:
        return cls("json_schema", schema)

    @classmethod
    def json_object(cls) -> GrammarRequest:
        return cls("json_object")


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0  # vLLM's default when the request names none
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # vLLM's extension; applies to unconstrained text only


@dataclass(frozen=True)
class Prepared:
    prompt_ids: list[int]
    grammar: Any = None  # xgrammar.CompiledGrammar; typed loosely to keep xgrammar out


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length"
    stop_reason: str | None  # the stop string that ended it, as vLLM reports
    prompt_tokens: int
    completion_tokens: int  # every sampled token, the end-of-turn token included (as vLLM)
    seconds: float


@dataclass(frozen=True)
class JobSpec:
    messages: list[dict[str, str]]
    grammar: GrammarRequest | None
    tools: ToolPlan | None
    max_tokens: int | None
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    ignore_eos: bool

    @classmethod
    def from_request(cls, req: ChatCompletionRequest) -> JobSpec:
        """Check what msgspec's types cannot; raises ``RequestRejected`` (400)."""
        if not req.messages:
            raise RequestRejected("messages must not be empty", param="messages")
        if req.n != 1:
            raise RequestRejected("the local tier generates one choice (n=1)", param="n")
        max_tokens = req.max_completion_tokens or req.max_tokens
        if max_tokens is not None and max_tokens < 1:
            raise RequestRejected("max_tokens must be at least 1", param="max_tokens")
        temperature = 1.0 if req.temperature is None else req.temperature
        if temperature < 0:
            raise RequestRejected("temperature must be non-negative", param="temperature")
        top_p = 1.0 if req.top_p is None else req.top_p
        if not 0 < top_p <= 1:
            raise RequestRejected("top_p must be in (0, 1]", param="top_p")
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        tools = ToolPlan.from_request(req)
        held = tools.grammar() if tools is not None else None
        return cls(
            messages=render_messages(req),
            # a tool call's grammar wins over response_format: the answer is the call
            grammar=_grammar(req) if held is None else GrammarRequest.json_schema(json.dumps(held)),
            tools=tools,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=req.seed,
            stop=tuple(s for s in stop if s),
            ignore_eos=req.ignore_eos,
        )

    def sampling(self, prompt_tokens: int, *, max_model_len: int) -> Sampling:
        """Resolve max_tokens against the context window, as vLLM does (400 if too long)."""
        room = max_model_len - prompt_tokens
        max_tokens = room if self.max_tokens is None else self.max_tokens
        if room < 1 or max_tokens > room:
            raise RequestRejected(
                f"This model's maximum context length is {max_model_len} tokens. However, you "
                f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
                f"messages, {max_tokens} in the completion). Please reduce the length of the "
                "messages or completion."
            )
        return Sampling(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop,
            ignore_eos=self.ignore_eos,
        )


def _grammar(req: ChatCompletionRequest) -> GrammarRequest | None:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return GrammarRequest.json_object()
    if fmt.json_schema is None or fmt.json_schema.schema is None:
        raise RequestRejected(
            "response_format json_schema needs json_schema.schema", param="response_format"
        )
    return GrammarRequest.json_schema(json.dumps(fmt.json_schema.schema))
