"""Lowered schemas through /generate and /v1/chat/completions: the tier gets the lowered
schema, the output is checked against the original, broken output is sampled again on the same
tier, strict mode keeps the 422, and no schema of any shape produces a 500. The tier is the
respx stand-in of tests/conftest.py (its answers are what is under test here)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from litestar.testing import TestClient

from gateway.settings import Settings
from tests.conftest import DEV_URL, completion
from tests.unit.test_schema_lowering import odd_schemas

CHAT = "/v1/chat/completions"
TAGS = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
    "required": ["tags"],
}
LOWERED_TAGS = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["tags"],
}


def sent_schema(route: respx.Route, call: int = -1) -> Any:
    sent = msgspec.json.decode(route.calls[call].request.content)
    return sent["response_format"]["json_schema"]["schema"], sent


def test_the_tier_gets_the_lowered_schema_and_the_output_is_checked_against_the_original(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    route = router.post(DEV_URL + CHAT).respond(200, json=completion('{"tags": ["a", "b"]}'))
    response = client.post("/generate", json={"prompt": "tags", "schema": TAGS})
    assert response.status_code == 200, response.text
    assert response.headers["x-schema-checked-after"] == "uniqueItems"
    schema, sent = sent_schema(route)
    assert schema == LOWERED_TAGS
    assert '"uniqueItems":true' in sent["messages"][0]["content"]  # the model sees the original


def test_a_broken_lowered_keyword_is_sampled_again_with_a_new_seed(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    route = router.post(DEV_URL + CHAT)
    route.side_effect = [
        respx.MockResponse(200, json=completion('{"tags": ["a", "a"]}')),
        respx.MockResponse(200, json=completion('{"tags": ["a", "b"]}')),
    ]
    response = client.post("/generate", json={"prompt": "tags", "schema": TAGS})
    assert response.status_code == 200, response.text
    assert response.json()["output"] == {"tags": ["a", "b"]}
    assert route.call_count == 2
    assert "seed" not in sent_schema(route, 0)[1]
    assert sent_schema(route, 1)[1]["seed"] == 1
    metrics = client.get("/metrics").text
    assert 'gateway_schema_retries_total{keyword="uniqueItems",tier="dev"} 1.0' in metrics


def test_retries_run_out_into_a_502_naming_the_keyword(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    route = router.post(DEV_URL + CHAT).respond(200, json=completion('{"tags": ["a", "a"]}'))
    response = client.post("/generate", json={"prompt": "tags", "schema": TAGS})
    assert response.status_code == 502
    problem = response.json()
    assert problem["reason"] == "schema-violation"
    assert problem["errors"][0]["keyword"] == "uniqueItems"
    assert problem["attempts"] == 3  # schema_retries = 2 (config/gateway.toml)
    assert [sent_schema(route, i)[1].get("seed") for i in range(3)] == [None, 1, 2]
    metrics = client.get("/metrics").text
    assert 'gateway_schema_violations_total{keyword="uniqueItems",tier="dev"} 1.0' in metrics


def test_greedy_sampling_is_not_retried(client: TestClient[Any], router: respx.MockRouter) -> None:
    route = router.post(DEV_URL + CHAT).respond(200, json=completion('{"tags": ["a", "a"]}'))
    response = client.post("/generate", json={"prompt": "t", "schema": TAGS, "temperature": 0})
    assert response.status_code == 502
    assert route.call_count == 1  # the same prompt at temperature 0 answers the same


@pytest.mark.uncalled_routes
def test_strict_mode_per_request_keeps_the_422(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    route = router.post(DEV_URL + CHAT).respond(200, json=completion('{"tags": []}'))
    response = client.post(
        "/generate", json={"prompt": "t", "schema": TAGS}, headers={"X-Schema-Mode": "strict"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["keyword"] == "uniqueItems"
    assert route.call_count == 0
    bad = client.post(
        "/generate", json={"prompt": "t", "schema": TAGS}, headers={"X-Schema-Mode": "loose"}
    )
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["path"] == "header:X-Schema-Mode"


def test_strict_mode_per_tier_and_the_header_overrides_it(
    settings: Settings, make_client: Any, router: respx.MockRouter
) -> None:
    tiers = dict(settings.tiers)
    tiers["dev"] = msgspec.structs.replace(tiers["dev"], schema_mode="strict")
    client = make_client(msgspec.structs.replace(settings, tiers=tiers))
    router.post(DEV_URL + CHAT).respond(200, json=completion('{"tags": []}'))
    assert client.post("/generate", json={"prompt": "t", "schema": TAGS}).status_code == 422
    lowered = client.post(
        "/generate", json={"prompt": "t", "schema": TAGS}, headers={"X-Schema-Mode": "lower"}
    )
    assert lowered.status_code == 200


def test_the_openai_surface_lowers_too(client: TestClient[Any], router: respx.MockRouter) -> None:
    route = router.post(DEV_URL + CHAT).respond(200, json=completion('{"tags": ["x"]}'))
    response = client.post(
        CHAT,
        json={
            "model": "dev",
            "messages": [{"role": "user", "content": "tags"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "t", "schema": TAGS},
            },
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-schema-checked-after"] == "uniqueItems"
    assert sent_schema(route)[0] == LOWERED_TAGS


@pytest.mark.parametrize("path", ["/generate", CHAT])
@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(schema=odd_schemas)
def test_no_schema_produces_a_500(
    client: TestClient[Any], router: respx.MockRouter, path: str, schema: Any
) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion('{"a": 1}'))
    if path == CHAT:
        payload: dict[str, Any] = {
            "model": "dev",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": schema},
            },
        }
    else:
        payload = {"prompt": "x", "schema": schema}
    response = client.post(path, json=payload)
    assert response.status_code < 500 or response.status_code == 502, response.text


def test_a_request_that_cannot_fit_the_context_is_refused_before_the_tier(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    route = router.post(DEV_URL + CHAT).respond(200, json=completion('{"tags": []}'))
    window = client.app.state.runtime.settings.tiers["dev"].spec.max_model_len
    prompt = "word " * (window * 2)  # >= 10 bytes a token at most 8 bytes each: over
    response = client.post("/generate", json={"prompt": prompt, "schema": TAGS, "max_tokens": 16})
    assert response.status_code == 400
    assert [e["path"] for e in response.json()["errors"]] == ["$.prompt", "$.schema"]
    near = client.post(
        "/generate",
        json={"prompt": "word " * window, "schema": TAGS, "max_tokens": window // 2},
    )  # certain only with max_tokens: named too
    assert near.status_code == 400
    assert "$.max_tokens" in [e["path"] for e in near.json()["errors"]]
    fits = client.post("/generate", json={"prompt": "tags", "schema": TAGS, "max_tokens": 512})
    assert fits.status_code == 200
    assert route.call_count == 1
