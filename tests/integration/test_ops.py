"""Liveness, readiness, OpenAPI: honest, and none of them calls a tier."""

from __future__ import annotations

from typing import Any

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
