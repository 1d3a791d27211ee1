"""A real OpenAI-compatible HTTP server on loopback, for tests of the real process: answers
``/v1/chat/completions`` after an optional delay, and ``/health``. Standard library only."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import completion


def _completion(content: str) -> bytes:
    return json.dumps(completion(content)).encode()


class StubServer(ThreadingHTTPServer):
    daemon_threads = True
    delay_s: float = 0.0
    content: str = '{"name": "Ada", "age": 36}'
    seen: list[dict[str, Any]]
    health: list[int]  # statuses /health answers in turn; the last one repeats
    health_calls: int = 0


class _Handler(BaseHTTPRequestHandler):
    server: StubServer

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
        self.server.seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        time.sleep(self.server.delay_s)
        self._send(200, _completion(self.server.content))


@contextmanager
def stub_upstream(
    delay_s: float = 0.0, health: list[int] | None = None, port: int = 0
) -> Iterator[StubServer]:
    """``port``: 0 for any free one; a port a stopped stub had, to restart "the same" tier."""
    server = StubServer(("127.0.0.1", port), _Handler)
    server.delay_s = delay_s
    server.health = list(health or [200])
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
