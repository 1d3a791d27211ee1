"""The completion lane (gateway/lane.py): what it does for its two routes that Litestar does
for the others. Bodies within the limit, request ids, 405s, problems for bugs, metrics, the
OpenAPI document, and a client that hangs up before its body arrived."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import respx
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.lane import Lane
from gateway.observability import Metrics
from gateway.settings import Settings
from tests.conftest import DEV_URL, PERSON_SCHEMA, completion, problem_of
from tests.integration.test_cold_start import metric

PROBLEM = "application/problem+json"
JSON = "application/json"  # /v1/...: OpenAI's error envelope
CHAT = "/v1/chat/completions"


def body() -> dict[str, Any]:
    return {"prompt": "Invent a person.", "schema": PERSON_SCHEMA}


def test_a_chunked_body_over_the_limit_is_a_413(client: TestClient[Any]) -> None:
    def chunks() -> Iterator[bytes]:  # no content-length: the lane must count as it reads
        for _ in range(3):
            yield b"x" * 500_000

    for path in ("/generate", CHAT):
        response = client.post(path, content=chunks())
        assert response.status_code == 413
        assert response.headers["content-type"] == (JSON if path == CHAT else PROBLEM)
        assert problem_of(response)["type"].endswith("/payload-too-large")


def test_a_chunked_body_within_the_limit_is_served(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    raw = httpx.Request("POST", "/", json=body()).content
    response = client.post("/generate", content=iter([raw[:10], raw[10:]]))
    assert response.status_code == 200
    assert response.json()["output"] == {"name": "Ada", "age": 36}


def test_a_wrong_method_is_a_405_that_says_what_to_use(client: TestClient[Any]) -> None:
    for path in ("/generate", CHAT):
        response = client.get(path)
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.headers["content-type"] == (JSON if path == CHAT else PROBLEM)
        assert problem_of(response)["type"].endswith("/method-not-allowed")
        assert len(response.headers["x-request-id"]) == 32


def test_a_bug_in_a_handler_is_a_500_problem_without_its_message(
    settings: Settings, router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def check(self, schema: object) -> None:
            raise RuntimeError("secret internals: wk-SECRET")

    app = create_app(settings, transport=httpx.MockTransport(router.async_handler))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert app.lane.runtime is not None
        app.lane.runtime.checker = Broken()  # type: ignore[assignment]
        response = client.post("/generate", json=body(), headers={"X-Request-Id": "bug-1"})
        counted = metric(client, "gateway_requests_total", route="generate", status="500")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["x-request-id"] == "bug-1"
    assert response.json()["type"].endswith("/internal")
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert "secret internals" in caplog.text  # the operator still sees what happened
    assert counted == 1


def test_the_lane_routes_stay_documented_after_a_route_is_registered(
    settings: Settings, router: respx.MockRouter
) -> None:
    from litestar import get

    @get("/extra")
    async def extra() -> None:
        return None

    app = create_app(settings, transport=httpx.MockTransport(router.async_handler))
    app.register(extra)
    with TestClient(app) as client:
        paths = client.get("/docs/openapi.json").json()["paths"]
    assert {"/generate", CHAT, "/extra", "/v1/models"} <= set(paths)
    assert "4XX" in paths["/generate"]["post"]["responses"]


async def test_a_client_that_hangs_up_before_its_body_gets_no_answer_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def never(runtime: Any, call: Any) -> Any:
        raise AssertionError("the handler must not run without a body")

    lane = Lane({"/generate": ("generate", never)}, max_body_bytes=1000)
    metrics = Metrics()
    lane.runtime = SimpleNamespace(metrics=metrics)  # type: ignore[assignment]
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope: Any = {"type": "http", "method": "POST", "path": "/generate", "headers": []}
    with caplog.at_level(logging.INFO, logger="gateway.request"):
        await asyncio.wait_for(lane(scope, receive, send), 5)
    assert sent == []
    record = next(r for r in caplog.records if r.name == "gateway.request")
    assert record.__dict__["status"] == 499
    assert b'status="499"' in metrics.render()
