"""The stream relay on its own: how the tier's bytes become the client's events, whatever
the tier's chunking, and what the end of a stream is checked for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from gateway.http.routes.openai import output_check
from gateway.http.streaming import DONE, StreamRelay
from gateway.routing.tier_stream import OpenedStream
from gateway.schemas import ChatCompletionRequest
from gateway.structured.preflight import SchemaChecker

PATH = "/v1/chat/completions"


def event(content: str, finish: str | None = None) -> bytes:
    delta = {"content": content}
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + msgspec.json.encode(body) + b"\n\n"


def relay(pieces: list[bytes], check: Any = None) -> list[bytes]:
    async def rest() -> AsyncIterator[bytes]:
        for piece in pieces[1:]:
            yield piece

    async def run() -> list[bytes]:
        closed: list[bool] = []

        async def close() -> None:
            closed.append(True)

        stream = OpenedStream("dev", pieces[0], rest(), close, latency_s=0.0)
        relayed = StreamRelay(stream, check, path=PATH, request_id="r1")
        out = [data async for data in relayed.events()]
        assert closed == [True]  # the tier's side is always closed
        return out

    return asyncio.run(run())


def test_events_go_out_whole_however_the_tier_cut_its_bytes() -> None:
    body = event("Hel") + event("lo") + event("", "stop") + DONE
    crlf = body.replace(b"\n", b"\r\n")
    for wire in (body, crlf):
        pieces = [wire[i : i + 7] for i in range(0, len(wire), 7)]  # mid-line, mid-event
        out = relay(pieces)
        assert b"".join(out) == body  # every event, in order, [DONE] last
        assert all(piece.endswith(b"\n\n") for piece in out)  # never half an event


def test_a_stream_without_done_ends_in_an_error_event() -> None:
    out = relay([event("Hel"), event("lo")])
    assert out[-1] == DONE
    error = msgspec.json.decode(out[-2][len(b"data: ") :])["error"]
    assert error["code"] == "bad-upstream-response" and "before [DONE]" in error["message"]
    assert error["tier"] == "dev" and error["request_id"] == "r1"


def test_the_assembled_content_is_checked_at_the_end() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    req = msgspec.convert(
        {
            "model": "dev",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        },
        ChatCompletionRequest,
    )
    checker = SchemaChecker()
    check, _ = output_check(req, checker.check(schema), checker)
    good = relay([event('{"a"'), event(": 1}"), event("", "stop") + DONE], check)
    assert good[-1] == DONE and not any(b'"error"' in piece for piece in good)
    bad = relay([event('{"a"'), event(': "1"}'), event("", "stop") + DONE], check)
    error = msgspec.json.decode(bad[-2][len(b"data: ") :])["error"]
    assert error["code"] == "output-invalid" and error["errors"][0]["path"] == "$.a"
