"""The HTTP edge: every route, the two completion routes included, is a Litestar route, so
Litestar's middleware (allowed hosts, CORS), the exception handlers, body limits, 405s and the
generated OpenAPI apply to all of them, and one middleware gives each its request id, metric
and log line, and cancels its work when the client hangs up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import uvicorn
from litestar import Litestar, get
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.settings import DEFAULT_CONFIG, Settings, load_settings
from tests.conftest import BASE_ENV, DEV_URL, PERSON_SCHEMA, completion, problem_of
from tests.integration.openai_standin import standin_tier
from tests.integration.test_cold_start import metric
from tests.integration.test_keys import Keys, bearer

PROBLEM = "application/problem+json"
CHAT = "/v1/chat/completions"


def rendering(path: str) -> str:
    """/v1/...: OpenAI's error envelope; the rest: RFC 9457."""
    return "application/json" if path.startswith("/v1/") else PROBLEM


COMPLETION_PATHS = ("/generate", CHAT)


def body() -> dict[str, Any]:
    return {"prompt": "Invent a person.", "schema": PERSON_SCHEMA}


def chat_body() -> dict[str, Any]:
    return {"model": "dev", "messages": [{"role": "user", "content": "Invent a person."}]}


def bodies() -> dict[str, dict[str, Any]]:
    return {"/generate": body(), CHAT: chat_body()}


def test_a_chunked_body_over_the_limit_is_a_413(client: TestClient[Any]) -> None:
    def chunks() -> Iterator[bytes]:  # no content-length: the limit is counted as it arrives
        for _ in range(3):
            yield b"x" * 500_000

    for path in COMPLETION_PATHS:
        response = client.post(path, content=chunks())
        assert response.status_code == 413
        assert response.headers["content-type"] == rendering(path)
        problem = problem_of(response)
        assert problem["type"].endswith("/payload-too-large")
        assert problem["limit"] == 1_048_576  # config/gateway.toml: max_body_bytes
        assert len(response.headers["x-request-id"]) == 32


def test_a_chunked_body_within_the_limit_is_served(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    raw = httpx.Request("POST", "/", json=body()).content
    response = client.post("/generate", content=iter([raw[:10], raw[10:]]))
    assert response.status_code == 200
    assert response.json()["output"] == {"name": "Ada", "age": 36}


def test_a_wrong_method_is_a_405_that_says_what_to_use(client: TestClient[Any]) -> None:
    for path in COMPLETION_PATHS:
        response = client.get(path)
        assert response.status_code == 405
        assert "POST" in response.headers["allow"]
        assert response.headers["content-type"] == rendering(path)
        assert problem_of(response)["type"].endswith("/method-not-allowed")
        assert len(response.headers["x-request-id"]) == 32


def test_an_unknown_path_is_a_404_problem_carrying_the_request_id(
    client: TestClient[Any],
) -> None:
    response = client.get("/nowhere", headers={"X-Request-Id": "lost-1"})
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["x-request-id"] == "lost-1"
    assert response.json()["request_id"] == "lost-1"


def test_a_bug_in_a_handler_is_a_500_problem_without_its_message(
    settings: Settings, router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def check(self, schema: object) -> None:
            raise RuntimeError("secret internals: wk-SECRET")

    app = create_app(settings, transport=httpx.MockTransport(router.async_handler))
    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.runtime.checker = Broken()
        response = client.post("/generate", json=body(), headers={"X-Request-Id": "bug-1"})
        counted = metric(client, "gateway_requests_total", route="generate", status="500")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["x-request-id"] == "bug-1"
    assert response.json()["type"].endswith("/internal")
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert "secret internals" in caplog.text  # the operator still sees what happened
    assert counted == 1


def test_a_client_mistake_logs_no_traceback(
    client: TestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    for path in COMPLETION_PATHS:
        for raw in (b"{", b'{"prompt": 1}', b"[]"):
            response = client.post(path, content=raw)
            assert response.status_code == 400, (path, raw, response.text)
            assert response.headers["content-type"] == rendering(path)
    assert not [r for r in caplog.records if r.exc_info]


def test_the_completion_routes_stay_documented_after_a_route_is_registered(
    settings: Settings, router: respx.MockRouter
) -> None:
    @get("/extra")
    async def extra() -> None:
        return None

    app = create_app(settings, transport=httpx.MockTransport(router.async_handler))
    app.register(extra)
    with TestClient(app) as client:
        paths = client.get("/docs/openapi.json").json()["paths"]
    assert {"/generate", CHAT, "/extra", "/v1/models"} <= set(paths)
    assert "4XX" in paths["/generate"]["post"]["responses"]


def test_openapi_lists_both_completion_operations_with_their_request_schemas(
    client: TestClient[Any],
) -> None:
    paths = client.get("/docs/openapi.json").json()["paths"]
    for path, operation_id, field in (
        ("/generate", "Generate", "prompt"),
        (CHAT, "ChatCompletions", "messages"),
    ):
        operation = paths[path]["post"]
        assert operation["operationId"] == operation_id
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert operation["requestBody"]["required"] is True
        assert field in schema["required"]
        assert "$ref" not in str(schema)  # inlined: Litestar's components know nothing of it
        assert set(operation["responses"]) == {"200", "4XX", "5XX"}  # no inferred 201


def test_allowed_hosts_apply_to_the_completion_routes(
    make_settings: Callable[..., Settings], router: respx.MockRouter
) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    settings = make_settings(GATEWAY_ALLOWED_HOSTS="gateway.test")
    app = create_app(settings, transport=httpx.MockTransport(router.async_handler))
    with TestClient(app, base_url="http://gateway.test") as client:
        for path, sent in bodies().items():
            assert client.post(path, json=sent).status_code == 200
            refused = client.post(path, json=sent, headers={"Host": "evil.test"})
            assert refused.status_code == 400, refused.text
            assert len(refused.headers["x-request-id"]) == 32  # still the edge's
        assert client.get("/health", headers={"Host": "evil.test"}).status_code == 400
    assert router.calls.call_count - 1 == 2  # the health probe, then the two allowed calls


def preflighted(
    client: TestClient[Any], path: str, origin: str, asks: str = "authorization, content-type"
) -> httpx.Response:
    """A browser's CORS preflight for a POST to ``path`` from ``origin`` that will send the
    headers ``asks``."""
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": asks,
    }
    return client.options(path, headers=headers)


def test_cors_applies_to_the_completion_routes(
    make_settings: Callable[..., Settings], router: respx.MockRouter
) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    origin = "https://app.example"
    settings = make_settings(GATEWAY_CORS_ALLOW_ORIGINS=origin)
    app = create_app(settings, transport=httpx.MockTransport(router.async_handler))
    with TestClient(app) as client:
        for path, sent in bodies().items():
            preflight = preflighted(client, path, origin, "authorization, x-model-tier")
            assert preflight.status_code == 204, preflight.text
            assert preflight.headers["access-control-allow-origin"] == origin
            allowed = preflight.headers["access-control-allow-headers"].lower()
            assert {"authorization", "x-model-tier"} <= set(allowed.replace(" ", "").split(","))
            served = client.post(path, json=sent, headers={"Origin": origin})
            assert served.status_code == 200
            assert served.headers["access-control-allow-origin"] == origin
            # a page's script may read which tier answered
            assert "x-model-tier-served" in served.headers["access-control-expose-headers"]
            foreign = client.post(path, json=sent, headers={"Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in foreign.headers
            refused = preflighted(client, path, "https://evil.example")
            assert refused.status_code == 400
            assert "access-control-allow-origin" not in refused.headers


def test_by_default_any_host_is_answered_and_no_cors_header_is_sent(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    """The zero-config run (the shipped gateway.toml, no GATEWAY_* for hosts or origins)."""
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    assert load_settings(environ={}).server.allowed_hosts == ()
    assert not load_settings(environ={}).server.cors.enabled
    for path, sent in bodies().items():
        served = client.post(
            path, json=sent, headers={"Host": "anything.test", "Origin": "https://app.example"}
        )
        assert served.status_code == 200, served.text
        assert not any(h.startswith("access-control-") for h in served.headers)


def test_warmup_is_logged_and_counted(
    client: TestClient[Any], router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="gateway.request"):
        response = client.post("/warmup", json={"tier": "dev"}, headers={"X-Request-Id": "w-1"})
        client.get("/health")
    assert response.headers["x-request-id"] == "w-1"
    lines = {r.__dict__["path"]: r for r in caplog.records if r.name == "gateway.request"}
    assert lines["/warmup"].levelno == logging.INFO
    assert lines["/warmup"].__dict__["request_id"] == "w-1"
    assert lines["/warmup"].__dict__["status"] == response.status_code
    assert lines["/health"].levelno == logging.DEBUG  # probes stay out of the INFO log
    assert metric(client, "gateway_requests_total", route="warmup") == 1


# A real server: the client hangs up and the tier call it started is cancelled.


class SilentTier:
    """A stand-in tier on loopback: answers its health probe, reads each completion request
    and never answers it. ``closed`` is set when the gateway closes such a connection."""

    def __init__(self) -> None:
        self.posted = asyncio.Event()
        self.closed = asyncio.Event()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                if head.startswith(b"GET /health"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    await writer.drain()
                    continue
                self.posted.set()
                await reader.read()  # hold the request until the gateway lets go of it
                self.closed.set()
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def served(app: Litestar) -> AsyncIterator[int]:
    """``app`` under uvicorn on a loopback port, started and stopped here. The socket listens
    before uvicorn starts, so a client may connect at once: it waits in the backlog."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        listener.close()


class LineSeen(logging.Handler):
    """Sets ``seen`` when the request log line is written (on the event loop's thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.set()


@pytest.fixture
async def silent_tier() -> AsyncIterator[SilentTier]:
    tier = SilentTier()
    listener = await asyncio.start_server(tier.handle, "127.0.0.1", 0)
    tier.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield tier


def silent_settings(tier: SilentTier) -> Settings:
    env = {**BASE_ENV, "GATEWAY_TIER_DEV_URL": f"http://127.0.0.1:{tier.port}"}
    return load_settings(environ=env)


def request_bytes(path: str, payload: bytes, *, declared: int | None = None) -> bytes:
    length = len(payload) if declared is None else declared
    return (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"X-Model-Tier: dev\r\nX-Request-Id: gone-1\r\nContent-Length: {length}\r\n\r\n"
    ).encode() + payload


@pytest.mark.parametrize("path", COMPLETION_PATHS)
async def test_a_client_that_hangs_up_cancels_its_tier_call(
    path: str, silent_tier: SilentTier, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(silent_settings(silent_tier))
    payload = httpx.Request("POST", "/", json=bodies()[path]).content
    with caplog.at_level(logging.INFO, logger="gateway.request"):
        async with served(app) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes(path, payload))
            await asyncio.wait_for(silent_tier.posted.wait(), 10)
            writer.close()
            # The tier's budget is minutes; the gateway lets go as soon as the client is gone.
            await asyncio.wait_for(silent_tier.closed.wait(), 5)
            counted = app.state.runtime.metrics.render()
    lines = [r for r in caplog.records if r.name == "gateway.request"]
    assert [(r.__dict__["request_id"], r.__dict__["status"]) for r in lines] == [("gone-1", 499)]
    assert b'status="499"' in counted
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_client_that_hangs_up_mid_body_is_logged_without_a_traceback(
    silent_tier: SilentTier, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(silent_settings(silent_tier))
    line_seen = LineSeen()
    logging.getLogger("gateway.request").addHandler(line_seen)
    with caplog.at_level(logging.INFO):
        async with served(app) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes("/generate", b'{"prompt": ', declared=1000))
            await writer.drain()
            writer.close()
            try:
                await asyncio.wait_for(line_seen.seen.wait(), 5)
            finally:
                logging.getLogger("gateway.request").removeHandler(line_seen)
    (line,) = [r for r in caplog.records if r.name == "gateway.request"]
    assert line.__dict__["status"] == 499
    assert not silent_tier.posted.is_set()
    assert not [r for r in caplog.records if r.exc_info]


async def test_hosts_and_origins_from_the_config_file_apply_to_a_served_gateway(
    tmp_path: Path,
) -> None:
    """The whole way: `[server]` in a gateway.toml, loaded, served by uvicorn on a socket,
    a real tier behind it."""
    shipped = DEFAULT_CONFIG.read_text()
    config = tmp_path / "gateway.toml"
    config.write_text(
        shipped.replace(
            "allowed_hosts = []", 'allowed_hosts = ["gateway.test", "*.gateway.test"]'
        ).replace("allow_origins = []", 'allow_origins = ["https://app.example"]')
    )
    (tmp_path / "tiers.toml").write_text((DEFAULT_CONFIG.parent / "tiers.toml").read_text())
    origin = "https://app.example"
    with standin_tier() as tier:
        env = {"GATEWAY_TIER_DEV_URL": f"http://127.0.0.1:{tier.server_address[1]}"}
        settings = load_settings(config, environ={**env, "GATEWAY_TIER_DEV_KIND": "openai"})
        assert settings.server.allowed_hosts == ("gateway.test", "*.gateway.test")
        async with served(create_app(settings)) as port, httpx.AsyncClient() as client:
            base = f"http://127.0.0.1:{port}"
            for path, sent in bodies().items():
                for host in ("gateway.test", "eu.gateway.test"):
                    answer = await client.post(base + path, json=sent, headers={"Host": host})
                    assert answer.status_code == 200, answer.text
                refused = await client.post(base + path, json=sent, headers={"Host": "evil.test"})
                assert refused.status_code == 400, refused.text
                preflight = await client.options(
                    base + path,
                    headers={
                        "Host": "gateway.test",
                        "Origin": origin,
                        "Access-Control-Request-Method": "POST",
                        "Access-Control-Request-Headers": "content-type, authorization",
                    },
                )
                assert preflight.status_code == 204, preflight.text
                assert preflight.headers["access-control-allow-origin"] == origin
                assert preflight.headers["access-control-max-age"] == "600"
    assert len(tier.seen) == 4  # the refused requests never reached the tier


def test_with_keys_on_a_preflight_needs_no_key_and_a_refusal_is_readable(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], TestClient[Any]],
    router: respx.MockRouter,
    tmp_path: Path,
) -> None:
    """Browsers send no Authorization on a preflight: it is answered before the key check.
    The request itself still needs its key, and its 401 carries the CORS headers, so the
    page's script reads why it was refused."""
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    keys = Keys(tmp_path / "keys.json")
    origin = "https://app.example"
    client = make_client(
        make_settings(GATEWAY_KEYS_FILE=str(keys.path), GATEWAY_CORS_ALLOW_ORIGINS=origin)
    )
    for path, sent in bodies().items():
        preflight = preflighted(client, path, origin)
        assert preflight.status_code == 204, preflight.text
        refused = client.post(path, json=sent, headers={"Origin": origin})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == origin
        served = client.post(path, json=sent, headers={"Origin": origin, **bearer(keys.both)})
        assert served.status_code == 200, served.text
        assert served.headers["access-control-allow-origin"] == origin
