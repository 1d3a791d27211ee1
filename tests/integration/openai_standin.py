"""A stand-in tier on loopback that answers as vLLM does, tool calls included, for the tests
of real OpenAI clients against a real gateway process. Standard library only.

What it answers to ``POST /v1/chat/completions``, first match wins:

1. the next scripted reply (``server.replies``: a status and a JSON body), if any;
2. with ``tools`` and a ``tool_choice`` other than ``none`` (``auto`` included): one call of
   the named function (else the first tool) with ``server.arguments``, as vLLM's Hermes
   parser returns it;
3. with a ``response_format``: ``server.content`` (JSON text);
4. otherwise a line of text that counts the turns it was given.

Messages carry every member vLLM puts in an assistant message (``refusal``, ``annotations``,
``audio``, ``function_call``, ``tool_calls: []``, ``reasoning_content``), so an SDK that
appends the message it got back sends all of them to the gateway on the next turn.
"""

from __future__ import annotations

import json
import threading
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

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


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
        self._send(200 if self.path == "/health" else 404, b"{}")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.seen.append(body)
        status, reply = answer(self.server, body)
        self._send(status, json.dumps(reply).encode())


@contextmanager
def standin_tier() -> Iterator[StandIn]:
    server = StandIn(("127.0.0.1", 0), _Handler)
    server.arguments = {"name": "Ada", "age": 36}
    server.replies = []
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
