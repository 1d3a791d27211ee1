"""Liveness, readiness, OpenAPI: honest, and none of them calls a tier."""

from __future__ import annotations

from typing import Any

import pytest
import respx
from litestar.testing import TestClient

from gateway.settings import load_settings


def test_health_calls_no_tier(client: TestClient[Any], router: respx.MockRouter) -> None:
    before = router.calls.call_count  # the start-up probe of dev may already be there
    response = client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert router.calls.call_count == before


def test_ready_with_a_usable_tier(client: TestClient[Any], router: respx.MockRouter) -> None:
    before = router.calls.call_count
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert router.calls.call_count == before


@pytest.mark.uncalled_routes
def test_not_ready_without_any_usable_tier(make_client: Any) -> None:
    client = make_client(load_settings(environ={"GATEWAY_LOCAL_TIER": "off"}))
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["tiers"]["prod"]["usable"] is False


def test_openapi_documents_the_request_bodies(client: TestClient[Any]) -> None:
    spec = client.get("/docs/openapi.json").json()
    generate = spec["paths"]["/generate"]["post"]
    schema = generate["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["prompt", "schema"]
    assert schema["properties"]["max_tokens"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 8192,
        "default": 2048,
    }
    assert "200" in generate["responses"]
    chat = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    assert "messages" in chat["properties"]


def test_a_bug_is_a_500_problem_without_traceback_or_message(
    settings: Any, router: respx.MockRouter, caplog: Any
) -> None:
    import httpx
    from litestar import get

    from gateway.app import create_app

    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: wk-SECRET")

    app = create_app(settings, transport=httpx.MockTransport(router.async_handler))
    app.register(boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/internal")
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert "secret internals" in caplog.text  # the operator still sees what happened


def test_an_invalid_schema_is_a_400_naming_its_path(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    before = router.calls.call_count
    response = client.post(
        "/generate",
        json={"prompt": "p", "schema": {"type": "object", "properties": {"a": {"type": 12}}}},
    )
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"].endswith("/schema-invalid")
    assert problem["errors"][0]["path"].startswith("$.properties.a")
    assert router.calls.call_count == before


@pytest.mark.uncalled_routes  # the dev tier is not configured either: no start-up probe
def test_an_unconfigured_tier_names_the_variable_that_configures_it(make_client: Any) -> None:
    # The name is spelled out here, as users read it in docs/configuration.md: every place
    # that tells them (the refusal, /status) must name the variable the settings read.
    client = make_client(load_settings(environ={"GATEWAY_LOCAL_TIER": "off"}))
    body = {"prompt": "Invent a person.", "schema": {"type": "object"}}
    refused = client.post("/generate", json=body, headers={"X-Model-Tier": "prod"})
    assert refused.status_code == 503, refused.text
    assert refused.json()["missing_setting"] == "GATEWAY_TIER_PROD_URL"
    assert "GATEWAY_TIER_PROD_URL" in refused.json()["detail"]
    status = client.get("/status").json()
    assert status["prod"]["missing_setting"] == "GATEWAY_TIER_PROD_URL"
    assert status["dev"]["missing_setting"] == "GATEWAY_TIER_DEV_URL"
