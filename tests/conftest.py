"""Shared fixtures: settings built from the real config files, and an app whose tiers are
reached through a respx router at the transport seam (no sockets, no sleeping)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.errors import PROBLEM_BASE
from gateway.settings import Settings, load_settings
from tests.hostile_tier import HostileTier
from tests.redis_server import RedisServer

DEV_URL = "http://dev.tier.test"
PROD_URL = "https://prod--tier.modal.test"
MODAL_KEY = "wk-SECRET-KEY-1234"
MODAL_SECRET = "ws-SECRET-VALUE-5678"

BASE_ENV = {
    "GATEWAY_TIER_DEV_URL": DEV_URL,
    "GATEWAY_TIER_DEV_KIND": "openai",
    "GATEWAY_TIER_PROD_URL": PROD_URL,
    "GATEWAY_MODAL_KEY": MODAL_KEY,
    "GATEWAY_MODAL_SECRET": MODAL_SECRET,
}


def completion(content: str = '{"name": "Ada", "age": 36}', **overrides: Any) -> dict[str, Any]:
    """A chat.completion body shaped like vLLM's."""
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "dev",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }
    body.update(overrides)
    return body


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The error's facts as problem members, from either rendering: RFC 9457 (``/generate``,
    the ops routes) or OpenAI's envelope (``/v1/...``), whose ``code`` is the problem slug."""
    body: dict[str, Any] = response.json()
    error = body.get("error")
    if not isinstance(error, dict):
        return body
    return {**error, "type": PROBLEM_BASE + error["code"], "detail": error["message"]}


PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        return load_settings(environ={**BASE_ENV, **env})

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "uncalled_routes: the test sets up tier routes to show they are not called (or that "
        "hang), so the router does not check that every route was called",
    )


@pytest.fixture
def router(request: pytest.FixtureRequest) -> Iterator[respx.MockRouter]:
    # Used only through create_app's transport seam: nothing is patched globally, so respx's
    # own check (on leaving its context) never runs; it is run here, after the test: a route
    # a test set up and nobody called means the test did not go where it thinks it went.
    # The dev tier (kind openai) is probed at start-up, as a real vLLM's /health would answer.
    mock = respx.MockRouter(assert_all_called=True)
    mock.get(DEV_URL + "/health", name="dev-health").respond(200)
    yield mock
    if request.node.get_closest_marker("uncalled_routes") is None:
        mock.assert_all_called()


@pytest.fixture
def make_client(
    router: respx.MockRouter,
) -> Iterator[Callable[[Settings], TestClient[Any]]]:
    clients: list[TestClient[Any]] = []

    def make(settings: Settings) -> TestClient[Any]:
        app = create_app(settings, transport=httpx.MockTransport(router.async_handler))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(
    make_client: Callable[[Settings], TestClient[Any]], settings: Settings
) -> TestClient[Any]:
    return make_client(settings)


def warm_prod(client: TestClient[Any], router: respx.MockRouter) -> TestClient[Any]:
    """Warm prod: a scale-to-zero Modal tier starts presumed cold, and this is what
    `POST /warmup` does for it (its /health answering once booted)."""
    if "prod-health" not in router.routes:
        router.get(PROD_URL + "/health", name="prod-health").respond(200)
    response = client.post("/warmup", json={"tier": "prod", "wait": True})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "warm"
    return client


@pytest.fixture
def warm_client(client: TestClient[Any], router: respx.MockRouter) -> TestClient[Any]:
    return warm_prod(client, router)


@pytest.fixture
def hostile_tier() -> Iterator[HostileTier]:
    """A real loopback server that answers each chat completion with a scripted fault
    (tests/hostile_tier.py); stopped after the test."""
    with HostileTier() as tier:
        yield tier


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server of this test's own (empty, on a free loopback port)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
