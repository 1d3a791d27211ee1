"""Relaying a tier's stream (``stream: true``) to the client: SSE events passed on as they
come, checked at the end, and never cut in silence.

>>> relay = StreamRelay(reply.stream, check, path=path, request_id=rid)
>>> async for data in relay.events(): ...        # bytes to send, as the tier sent them

By the time a relay exists the stream is open (``gateway.routing.tier_stream.open_stream``,
which ``Dispatcher`` calls
for a ``Job.stream``, on ``TierClient.open_stream``): the tier
answered 200 and sent its first bytes within its time-to-first-token budget, so routing,
warm-up and any fallback are decided and the client's status line is 200. From then on:

- each piece of the tier's body goes out as soon as it completes an event (``\\n\\n``); the
  tier's ``data: [DONE]`` is held back until the end;
- with a ``json_schema``/``json_object`` response format or tools, the deltas are assembled
  (content per choice, tool calls by index) and checked at the end exactly as a
  non-streamed answer is (``routes.openai.output_check``); a violation is an error event;
- a tier failure (reset, stall past ``stream_idle``, its own error event, a body that ends
  before ``[DONE]``) is an error event too.

An error event is OpenAI's envelope (``gateway.http.problems.error_event``), which the SDKs raise
as an ``APIError``; ``data: [DONE]`` always follows. Closing the relay early (the client hung
up) closes the tier's response, and vLLM aborts a request whose client went away.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import msgspec

from gateway.errors import BadUpstreamResponse, GatewayError, OutputInvalid
from gateway.http.problems import error_event
from gateway.routing.tier_client import TierReply
from gateway.routing.tier_stream import OpenedStream
from gateway.schemas import ChatChoice, ChatCompletion, ChatMessageOut, FunctionCall, ToolCall

DONE = b"data: [DONE]\n\n"
_ERROR_EVENT = b'data: {"error"'
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # a proxy in front must not buffer the stream either
]


class _FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None


class _ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta = msgspec.field(default_factory=_Delta)
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    error: Any = None


class _Assembled:
    """One choice, put back together from its deltas."""

    __slots__ = ("calls", "content", "finish_reason")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]
        self.finish_reason: str | None = None

    def add(self, choice: _ChunkChoice) -> None:
        delta = choice.delta
        if delta.content:
            self.content.append(delta.content)
        for call in delta.tool_calls or ():
            parts = self.calls.setdefault(call.index, ["", ""])
            if call.id:
                parts[0] = call.id
            if call.function is not None:
                if call.function.name:
                    parts[1] += call.function.name
                if call.function.arguments:
                    parts.append(call.function.arguments)
        if choice.finish_reason is not None:
            self.finish_reason = choice.finish_reason

    def choice(self, index: int) -> ChatChoice:
        calls = [
            ToolCall(id=p[0], function=FunctionCall(name=p[1], arguments="".join(p[2:])))
            for _, p in sorted(self.calls.items())
        ]
        message = ChatMessageOut(content="".join(self.content), tool_calls=calls or None)
        return ChatChoice(index=index, message=message, finish_reason=self.finish_reason)


class StreamRelay:
    def __init__(
        self,
        stream: OpenedStream,
        check: Callable[[TierReply], Any] | None,
        *,
        path: str,
        request_id: str | None,
    ) -> None:
        self.stream = stream
        self.check = check
        self.path = path
        self.request_id = request_id
        self._choices: dict[int, _Assembled] = {}

    async def events(self) -> AsyncGenerator[bytes]:
        """The client's body. Ends with ``[DONE]``, after an error event if anything failed."""
        out = _Outbox()
        failure: GatewayError | None = None
        try:
            async for chunk in self.stream.chunks():
                failure = out.feed(chunk, self)
                if out.ready:
                    yield out.drain()
                if failure is not None:
                    break
                # after [DONE], read on to the body's end: the connection goes back to the pool
            else:
                if not out.ended:
                    failure = BadUpstreamResponse(
                        f"tier {self.stream.tier} ended the stream before [DONE]",
                        tier=self.stream.tier,
                    )
        except GatewayError as error:  # a stall or a reset (TierStream.chunks)
            failure = error
        finally:
            await self.stream.aclose()
        if failure is None:
            failure = self._verdict()
        if failure is not None:
            yield error_event(failure, self.path, self.request_id)
        yield DONE

    def observe(self, event: bytes) -> GatewayError | None:
        """Note what an event says (only when the end must be checked, or it is an error)."""
        if event.startswith(_ERROR_EVENT):
            reason = _tier_error(event)
            return BadUpstreamResponse(
                f"tier {self.stream.tier} failed mid-stream: {reason}", tier=self.stream.tier
            )
        if self.check is None or not event.startswith(b"data: "):
            return None
        try:
            chunk = msgspec.json.decode(event[6:], type=_Chunk)
        except msgspec.MsgspecError:
            return BadUpstreamResponse(
                f"tier {self.stream.tier} sent an event that is not a chunk", tier=self.stream.tier
            )
        for choice in chunk.choices:
            self._choices.setdefault(choice.index, _Assembled()).add(choice)
        return None

    def _verdict(self) -> GatewayError | None:
        """The assembled answer, checked as a non-streamed one would be."""
        if self.check is None:
            return None
        choices = [a.choice(i) for i, a in sorted(self._choices.items())]
        if not choices:
            return BadUpstreamResponse(
                f"tier {self.stream.tier} streamed no choices", tier=self.stream.tier
            )
        reply = TierReply(body=b"", completion=ChatCompletion(choices=choices), latency_s=0.0)
        try:
            self.check(reply)
        except OutputInvalid as error:
            error.members.setdefault("tier", self.stream.tier)
            return error
        return None


class _Outbox:
    """Splits the tier's bytes into whole events; holds back ``[DONE]`` and a partial event."""

    __slots__ = ("ended", "pending", "ready")

    def __init__(self) -> None:
        self.pending = b""
        self.ready: list[bytes] = []
        self.ended = False

    def feed(self, chunk: bytes, relay: StreamRelay) -> GatewayError | None:
        data = self.pending + chunk if self.pending else chunk
        if b"\r\n" in data:
            data = data.replace(b"\r\n", b"\n")  # SSE allows CRLF; one form to split on
        start = 0
        while (end := data.find(b"\n\n", start)) >= 0:
            event = data[start : end + 2]
            start = end + 2
            if event.startswith(DONE[:12]):
                self.ended = True
                continue
            failure = relay.observe(event)
            if failure is not None:
                return failure
            self.ready.append(event)
        self.pending = data[start:]
        return None

    def drain(self) -> bytes:
        ready = self.ready[0] if len(self.ready) == 1 else b"".join(self.ready)
        self.ready = []
        return ready


def _tier_error(event: bytes) -> str:
    try:
        body = msgspec.json.decode(event[6:].strip())
    except msgspec.DecodeError:
        return "an unreadable error event"
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return str(message)[:300] if message else "an error event"
