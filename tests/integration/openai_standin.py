"""A stand-in tier on loopback that answers as vLLM does, tool calls included, for every
test that needs a real tier server (real OpenAI clients, a real gateway process, a tier
killed and restarted). Standard library only.

>>> with standin_tier(health=[503, 200], answer_delay_s=1.5) as tier:
...     env = {"GATEWAY_TIER_DEV_URL": tier.url, "GATEWAY_TIER_DEV_KIND": "openai"}

``GET /health`` answers ``server.health`` in turn (the last one repeats; 200 by default) and
counts ``server.health_calls``. Each chat request's body is kept in ``server.seen`` and its
headers in ``server.seen_headers``; ``server.answer_delay_s`` holds every answer that long
(a tier busy generating). Leaving ``standin_tier`` stops it as a killed tier stops: its
keep-alive connections are cut too, so nothing is answered after it.

What it answers to ``POST /v1/chat/completions``, first match wins:

1. the next scripted reply (``server.replies``: a status and a JSON body), if any;
2. with ``tools`` and a ``tool_choice`` other than ``none`` (``auto`` included): one call of
   the named function (else the first tool) with ``server.arguments``, as vLLM's Hermes
   parser returns it;
3. with a ``response_format``: ``server.content`` (JSON text);
4. otherwise a line of text that counts the turns it was given.

With ``stream: true`` the same answer goes out as vLLM streams it (SSE chunks: the role, the
content in pieces or the tool call's name then its arguments in pieces, the finish, usage
when ``stream_options.include_usage``, ``[DONE]``). ``server.fault`` makes it hostile:
``"reset"`` (the connection closed after the first pieces), ``"error"`` (vLLM's error event
mid-way), ``"stall"`` (``server.delay_s`` of silence mid-way), ``"first_byte_delay"`` (nothing for ``server.delay_s`` before the first byte);
``server.hold`` makes it wait for the test's go-ahead after the first piece, and
``server.hangups`` counts streams whose client went away before the end.

Messages carry every member vLLM puts in an assistant message (``refusal``, ``annotations``,
``audio``, ``function_call``, ``tool_calls: []``, ``reasoning_content``), so an SDK that
appends the message it got back sends all of them to the gateway on the next turn.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class StandIn(ThreadingHTTPServer):
    daemon_threads = True
    content: str = '{"name": "Ada", "age": 36}'
    arguments: dict[str, Any]
    replies: list[tuple[int, dict[str, Any]]]
    seen: list[dict[str, Any]]
    seen_headers: list[dict[str, str]]
    health: list[int]  # statuses /health answers in turn; the last one repeats
    health_calls: int = 0
    answer_delay_s: float = 0.0
    fault: str | None = None
    delay_s: float = 0.0
    pieces: int = 4  # content is streamed in this many pieces
    piece_delay_s: float = 0.0
    hold: threading.Event | None = None  # set by the test: send the rest
    hangups: int = 0

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._arrived = threading.Condition()

    def wait_seen(self, count: int, timeout_s: float = 30.0) -> None:
        """Block until ``count`` chat requests have arrived (``timeout_s`` only bounds a
        failing test)."""
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.seen) >= count, timeout_s)
        assert arrived, f"{len(self.seen)} of {count} requests reached the tier"

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        """Stop listening and cut every open connection, as a killed server's are."""
        self.shutdown()
        self.server_close()
        with self._open_lock:
            still_open = list(self._open)
        for conn in still_open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def message(content: str | None, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": tool_calls or [],
        "reasoning_content": None,
    }


def completion(msg: dict[str, Any], model: str, finish_reason: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def answer(server: StandIn, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if server.replies:
        return server.replies.pop(0)
    model = str(body.get("model", ""))
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    if tools and choice != "none":
        name = choice["function"]["name"] if isinstance(choice, dict) else None
        name = name or tools[0]["function"]["name"]
        call = {
            "id": f"chatcmpl-tool-{len(server.seen)}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(server.arguments)},
        }
        return 200, completion(message(None, [call]), model, "tool_calls")
    if body.get("response_format", {}).get("type", "text") != "text":
        return 200, completion(message(server.content), model, "stop")
    turns = sum(1 for m in body.get("messages", []) if m.get("role") == "user")
    return 200, completion(message(f"Hello, turn {turns}."), model, "stop")


class _Handler(BaseHTTPRequestHandler):
    server: StandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's uvicorn

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/health":
            self._send(404, b"{}")
            return
        self.server.health_calls += 1
        codes = self.server.health
        self._send(codes.pop(0) if len(codes) > 1 else codes[0], b"{}")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.seen_headers.append(dict(self.headers))
        with self.server._arrived:
            self.server.seen.append(body)
            self.server._arrived.notify_all()
        time.sleep(self.server.answer_delay_s)
        status, reply = answer(self.server, body)
        if status != 200 or not body.get("stream"):
            self._send(status, json.dumps(reply).encode())
            return
        include_usage = (body.get("stream_options") or {}).get("include_usage", False)
        events = stream_events(reply, self.server.pieces, include_usage)
        server = self.server
        if server.fault == "first_byte_delay":
            time.sleep(server.delay_s)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for i, event in enumerate(events):
                if i == 2 and server.fault == "reset":
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if i == 2 and server.fault == "stall":
                    self.wfile.flush()
                    time.sleep(server.delay_s)  # then carries on, too late
                if i == 2 and server.fault == "error":
                    error = {"error": {"message": "CUDA out of memory", "type": "InternalServerError",
                                       "param": None, "code": 500}}  # fmt: skip
                    self.wfile.write(b"data: " + json.dumps(error).encode() + b"\n\n")
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                self.wfile.write(event)
                self.wfile.flush()
                if i == 1 and server.hold is not None:
                    server.hold.wait(timeout=10)
                time.sleep(server.piece_delay_s)
        except (BrokenPipeError, ConnectionResetError):
            server.hangups += 1


def stream_events(reply: dict[str, Any], pieces: int, include_usage: bool) -> list[bytes]:
    """A chat.completion as vLLM streams it."""
    base = {k: reply[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    choice = reply["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = base | {"choices": [{"index": 0, "delta": delta, "logprobs": None,
                                    "finish_reason": finish}]}  # fmt: skip
        if include_usage:
            body["usage"] = None
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    for i, call in enumerate(message["tool_calls"]):
        head = {"index": i, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}  # fmt: skip
        events.append(chunk({"tool_calls": [head]}))
        for part in split(call["function"]["arguments"], pieces):
            events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    for part in split(message["content"] or "", pieces):
        events.append(chunk({"content": part}))
    events.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        usage = base | {"choices": [], "usage": reply["usage"]}
        events.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def split(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


@contextmanager
def standin_tier(
    *, answer_delay_s: float = 0.0, health: list[int] | None = None, port: int = 0
) -> Iterator[StandIn]:
    """``port``: 0 for any free one; the port a stopped stand-in had, to restart "the same"
    tier."""
    server = StandIn(("127.0.0.1", port))
    server.arguments = {"name": "Ada", "age": 36}
    server.replies = []
    server.seen = []
    server.seen_headers = []
    server.health = list(health or [200])
    server.answer_delay_s = answer_delay_s
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
