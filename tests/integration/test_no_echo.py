"""Nothing a tier echoes reaches anyone: a real loopback tier that echoes the request's
headers (as some edges and proxies do) in every error shape, and sentinel secrets searched
for in every output: response bodies and headers, captured logs, /status and /metrics.

Before the fix, a 400/404/413/422 body echoing the headers put Modal-Key and Modal-Secret in
the client's problem twice (`detail` and `upstream_reason`)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.redact import RedactingFilter, Redactor
from gateway.settings import load_settings
from tests.conftest import BASE_ENV, PERSON_SCHEMA

KEY = "wk-sentinel-key-7f3a9c1d"
SECRET = "ws-sentinel-secret-2b8e4d6f"


def header_lines(headers: dict[str, str]) -> str:
    return "".join(f"{name}: {value}\n" for name, value in headers.items())


# Each error shape a tier (vLLM, FastAPI, an edge, a proxy) answers with, echoing headers.
SHAPES: dict[str, tuple[int, str, Any]] = {
    "400 JSON error": (400, "json", lambda h: {"error": {"message": f"bad: {h!r}"}}),
    "404 flat message": (404, "json", lambda h: {"message": "no route\n" + header_lines(h)}),
    "413 detail list": (413, "json", lambda h: {"detail": [{"msg": "too big", "input": h}]}),
    "422 detail text": (422, "json", lambda h: {"detail": "headers:\n" + header_lines(h)}),
    "400 plain text": (400, "text", lambda h: "Bad Request\n" + header_lines(h)),
    "422 JSON dump": (422, "json", lambda h: {"error": {"message": json.dumps(h)}}),
    "400 header pairs": (400, "json", lambda h: {"detail": list(h.items())}),
    "500 JSON": (500, "json", lambda h: {"error": {"message": json.dumps(h)}}),
    "502 text": (502, "text", lambda h: header_lines(h)),
    "503 JSON": (503, "json", lambda h: {"detail": h}),
}


class EchoTier(BaseHTTPRequestHandler):
    """Answers /health 200; a completion with the shape its prompt names, echoing headers."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._send(200, "json", {})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        status, kind, make = SHAPES[body["messages"][-1]["content"]]
        self._send(status, kind, make(dict(self.headers)))

    def _send(self, status: int, kind: str, content: Any) -> None:
        raw = (json.dumps(content) if kind == "json" else content).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json" if kind == "json" else "text/plain")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def echo_tier() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoTier)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_no_echoed_header_reaches_a_client_a_log_status_or_metrics(
    echo_tier: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = {
        **BASE_ENV,
        "GATEWAY_TIER_DEV_URL": echo_tier,
        "GATEWAY_TIER_DEV_KIND": "modal",  # modal: the gateway sends Modal-Key/Modal-Secret
        "GATEWAY_MODAL_KEY": KEY,
        "GATEWAY_MODAL_SECRET": SECRET,
    }
    outputs: list[str] = []
    with (
        caplog.at_level(logging.DEBUG),
        TestClient(create_app(load_settings(environ=env)), raise_server_exceptions=False) as client,
    ):
        for shape in SHAPES:
            response = client.post(
                "/v1/chat/completions",
                json={"model": "dev", "messages": [{"role": "user", "content": shape}]},
                headers={"x-tier-fallback": "deny"},
            )
            assert response.status_code >= 400, shape
            outputs += [shape, response.text, repr(response.headers)]
        rejected = client.post(
            "/generate",
            json={"prompt": "400 JSON error", "schema": PERSON_SCHEMA},
            headers={"x-model-tier": "dev", "x-tier-fallback": "deny"},
        )
        outputs += [rejected.text, repr(rejected.headers)]
        outputs += [client.get("/status").text, client.get("/metrics").text]
        outputs += [client.get("/ready").text]
    outputs += [caplog.text, *(r.getMessage() for r in caplog.records)]
    everything = "\n".join(outputs)
    assert "tier dev rejected the request" in everything  # the tier's words do get through
    assert KEY not in everything
    assert SECRET not in everything
    assert KEY[:12] not in everything and SECRET[:12] not in everything  # nor a cut-off part


def test_the_redactor_drops_modal_header_lines_and_replaces_known_secrets() -> None:
    redactor = Redactor([KEY, "short"])  # too short to redact by value: ordinary words
    assert redactor.text(f"bad\nModal-Key: {KEY}\nmodal-secret: x\naccept: */*") == (
        "bad\naccept: */*"
    )
    assert redactor.text(f"{{'Modal-Key': '{KEY}', 'Accept': '*/*'}}") == (
        "{'Modal-Key': [REDACTED], 'Accept': '*/*'}"
    )
    assert redactor.text('{"modal-secret": "anything"}') == '{"modal-secret": [REDACTED]}'
    assert redactor.text(f"key={KEY}; short stays") == "key=[REDACTED]; short stays"
    assert redactor.text(f"an excerpt cut at 300: {KEY[:9]}") == "an excerpt cut at 300: [REDACTED]"
    stopped = "modal-http: app for invoked web endpoint is stopped"  # Modal's words: kept
    assert redactor.text(stopped) == stopped
    # a fixture's JSON body: the same, in every string (a recording made without the secret)
    echoed = {"error": {"message": "bad\nModal-Secret: ws-unknown-to-this-run\nok"}}
    assert Redactor().json(echoed) == {"error": {"message": "bad\nok"}}


def test_log_lines_and_tracebacks_lose_every_secret(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("gateway.test")
    redaction = RedactingFilter(Redactor([KEY, SECRET])).install()
    try:
        with caplog.at_level(logging.INFO):
            log.warning("tier said %s", f"Modal-Secret: {SECRET}", extra={"tier_reason": KEY})
            try:
                raise ValueError(f"echo {KEY}")
            except ValueError:
                log.exception("unhandled")
    finally:
        redaction.uninstall()
    assert "unhandled" in caplog.text and "ValueError: echo [REDACTED]" in caplog.text
    assert KEY not in caplog.text and SECRET not in caplog.text
    assert all(r.tier_reason == "[REDACTED]" for r in caplog.records if hasattr(r, "tier_reason"))
    log.warning("after uninstall %s", KEY)
    assert KEY in caplog.records[-1].getMessage()  # the filter lives only with the app
