"""/generate end to end through the app, tiers mocked at the transport (respx)."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
import respx
from litestar.testing import TestClient

from tests.conftest import DEV_URL, PERSON_SCHEMA, PROD_URL, completion, warm_prod

CHAT = "/v1/chat/completions"


def body(**overrides: Any) -> dict[str, Any]:
    return {"prompt": "Invent a person.", "schema": PERSON_SCHEMA, **overrides}


def test_valid_request_reaches_the_default_tier(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    route = router.post(DEV_URL + CHAT).respond(200, json=completion())
    response = client.post("/generate", json=body())
    assert response.status_code == 200
    assert response.headers["x-model-tier-served"] == "dev"
    assert response.headers["x-model-tier-requested"] == "dev"
    assert "x-fallback-reason" not in response.headers
    data = response.json()
    assert data["output"] == {"name": "Ada", "age": 36}
    assert data["tier"] == "dev"
    assert data["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
    assert route.call_count == 1


def test_upstream_request_uses_response_format_never_guided_json(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    route = router.post(DEV_URL + CHAT).respond(200, json=completion())
    client.post("/generate", json=body(max_tokens=64, temperature=0.0, top_p=0.5))
    sent = msgspec.json.decode(route.calls.last.request.content)
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": PERSON_SCHEMA, "strict": True},
    }
    assert not any(key.startswith("guided_") for key in sent)
    assert sent["model"] == "dev"  # the tier's served model name, from tiers.toml
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (64, 0.0, 0.5)
    assert sent["messages"][-1] == {"role": "user", "content": "Invent a person."}


def test_header_picks_the_tier(warm_client: TestClient[Any], router: respx.MockRouter) -> None:
    prod = router.post(PROD_URL + CHAT).respond(200, json=completion(model="prod"))
    response = warm_client.post("/generate", json=body(), headers={"X-Model-Tier": "prod"})
    assert response.status_code == 200
    assert response.headers["x-model-tier-served"] == "prod"
    assert prod.call_count == 1


def test_gateway_env_picks_the_tier(
    make_settings: Any, make_client: Any, router: respx.MockRouter
) -> None:
    prod = router.post(PROD_URL + CHAT).respond(200, json=completion(model="prod"))
    client = warm_prod(make_client(make_settings(GATEWAY_ENV="prod")), router)
    response = client.post("/generate", json=body())
    assert response.headers["x-model-tier-served"] == "prod"
    assert prod.call_count == 1


def test_request_id_is_propagated_to_the_tier_and_back(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    route = router.post(DEV_URL + CHAT).respond(200, json=completion())
    response = client.post("/generate", json=body(), headers={"X-Request-Id": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    assert route.calls.last.request.headers["x-request-id"] == "req-42"
    generated = client.post("/generate", json=body()).headers["x-request-id"]
    assert len(generated) == 32 and generated != "req-42"
    insane = client.post("/generate", json=body(), headers={"X-Request-Id": "a b\tc"})
    assert insane.headers["x-request-id"] not in (generated, "a b\tc")  # replaced, and new


def test_modal_tier_gets_proxy_auth_and_follows_303_chain(
    warm_client: TestClient[Any], router: respx.MockRouter
) -> None:
    router.post(PROD_URL + CHAT).respond(303, headers={"location": "/__result?id=1"})
    router.get(PROD_URL + "/__result?id=1").respond(303, headers={"location": "/__result?id=2"})
    router.get(PROD_URL + "/__result?id=2").respond(303, headers={"location": "/__result?id=3"})
    router.get(PROD_URL + "/__result?id=3").respond(200, json=completion(model="prod"))
    response = warm_client.post("/generate", json=body(), headers={"X-Model-Tier": "prod"})
    assert response.status_code == 200
    calls = [c for c in router.calls if c.request.url.path != "/health"]
    assert [c.request.method for c in calls] == ["POST", "GET", "GET", "GET"]
    assert all(c.request.headers["modal-key"] for c in calls)


def test_one_hop_303(warm_client: TestClient[Any], router: respx.MockRouter) -> None:
    router.post(PROD_URL + CHAT).respond(303, headers={"location": "/__result?id=9"})
    router.get(PROD_URL + "/__result?id=9").respond(200, json=completion(model="prod"))
    response = warm_client.post("/generate", json=body(), headers={"X-Model-Tier": "prod"})
    assert response.status_code == 200
    assert response.json()["output"] == {"name": "Ada", "age": 36}


def test_more_303_hops_than_the_budget_allows_is_a_504_naming_the_tier(
    warm_client: TestClient[Any], router: respx.MockRouter
) -> None:
    # prod's cold budget is 600 s: 5 holds of 150 s, +1 => at most 5 redirects followed.
    router.post(PROD_URL + CHAT).respond(303, headers={"location": "/__result"})
    loop = router.get(PROD_URL + "/__result").respond(303, headers={"location": "/__result"})
    response = warm_client.post(
        "/generate", json=body(), headers={"X-Model-Tier": "prod", "X-Tier-Fallback": "deny"}
    )
    assert response.status_code == 504
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["tier"] == "prod"
    assert problem["redirects"] == 5
    assert loop.call_count == 5


@pytest.mark.uncalled_routes
def test_redirect_to_another_origin_is_a_502_and_never_followed(
    warm_client: TestClient[Any], router: respx.MockRouter
) -> None:
    # The prompt and the proxy-auth tokens go only to the tier's own scheme, host and port.
    router.post(PROD_URL + CHAT).respond(307, headers={"location": "https://elsewhere.test/r"})
    other = router.post("https://elsewhere.test/r").respond(200, json=completion())
    response = warm_client.post(
        "/generate", json=body(), headers={"X-Model-Tier": "prod", "X-Tier-Fallback": "deny"}
    )
    assert response.status_code == 502
    assert response.json()["tier"] == "prod"
    assert not other.called


def test_openai_tier_gets_no_proxy_auth(client: TestClient[Any], router: respx.MockRouter) -> None:
    route = router.post(DEV_URL + CHAT).respond(200, json=completion())
    client.post("/generate", json=body())
    assert "modal-key" not in route.calls.last.request.headers


@pytest.mark.parametrize(
    ("upstream", "status", "slug"),
    [
        (
            httpx.Response(
                400,
                json={
                    "error": {
                        "message": "The provided JSON schema contains features not supported by xgrammar.",
                        "type": "BadRequestError",
                        "code": 400,
                    }
                },
            ),
            400,
            "upstream-rejected",
        ),
        (
            httpx.Response(422, json={"object": "error", "message": "bad field", "code": 422}),
            422,
            "upstream-rejected",
        ),
        (httpx.Response(401, text="unauthorized"), 502, "bad-upstream-response"),
        (httpx.Response(429, headers={"retry-after": "7"}), 503, "tier-unavailable"),
        (httpx.Response(503, text="loading"), 503, "tier-unavailable"),
        (httpx.Response(500, text="boom"), 502, "bad-upstream-response"),
        (httpx.Response(502, text="bad gateway"), 502, "bad-upstream-response"),
        (httpx.Response(504, text="edge timeout"), 504, "tier-timeout"),
        (httpx.Response(200, text="not json"), 502, "bad-upstream-response"),
        (httpx.Response(200, json={"choices": []}), 502, "bad-upstream-response"),
    ],
)
def test_upstream_answers_map_to_problems_naming_the_tier(
    client: TestClient[Any],
    router: respx.MockRouter,
    upstream: httpx.Response,
    status: int,
    slug: str,
) -> None:
    router.post(DEV_URL + CHAT).mock(return_value=upstream)
    response = client.post("/generate", json=body())
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/" + slug)
    assert problem["status"] == status
    assert problem["tier"] == "dev"
    assert "Traceback" not in response.text


def test_upstream_400_carries_the_tiers_reason(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    reason = "The provided JSON schema contains features not supported by xgrammar."
    router.post(DEV_URL + CHAT).respond(400, json={"error": {"message": reason, "code": 400}})
    problem = client.post("/generate", json=body()).json()
    assert problem["upstream_reason"] == reason
    assert problem["upstream_status"] == 400


def test_tier_429_passes_retry_after_on(client: TestClient[Any], router: respx.MockRouter) -> None:
    router.post(DEV_URL + CHAT).respond(429, headers={"retry-after": "7"})
    assert client.post("/generate", json=body()).headers["retry-after"] == "7"


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        (httpx.ConnectError("refused"), 503, "tier-unavailable"),
        (httpx.ConnectTimeout("slow"), 503, "tier-unavailable"),
        (httpx.ReadTimeout("slow"), 504, "tier-timeout"),
        (httpx.RemoteProtocolError("garbage"), 502, "bad-upstream-response"),
        (httpx.ReadError("reset"), 502, "bad-upstream-response"),
    ],
)
def test_transport_failures_map_to_problems(
    client: TestClient[Any], router: respx.MockRouter, error: Exception, status: int, slug: str
) -> None:
    router.post(DEV_URL + CHAT).mock(side_effect=error)
    response = client.post("/generate", json=body())
    assert response.status_code == status
    problem = response.json()
    assert problem["type"].endswith("/" + slug)
    assert problem["tier"] == "dev"
    if status == 503:
        assert response.headers["retry-after"].isdigit()


def test_read_timeout_names_the_budget(client: TestClient[Any], router: respx.MockRouter) -> None:
    router.post(DEV_URL + CHAT).mock(side_effect=httpx.ReadTimeout("slow"))
    problem = client.post("/generate", json=body()).json()
    assert problem["budget_s"] == 120.0  # dev's warm budget from config/gateway.toml


def test_client_may_shorten_the_deadline(client: TestClient[Any], router: respx.MockRouter) -> None:
    router.post(DEV_URL + CHAT).mock(side_effect=httpx.ReadTimeout("slow"))
    response = client.post("/generate", json=body(), headers={"X-Request-Timeout": "2.5"})
    assert response.json()["budget_s"] == 2.5


def test_client_may_not_lengthen_the_deadline(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    router.post(DEV_URL + CHAT).mock(side_effect=httpx.ReadTimeout("slow"))
    response = client.post("/generate", json=body(), headers={"X-Request-Timeout": "9999"})
    assert response.json()["budget_s"] == 120.0


@pytest.mark.uncalled_routes
def test_the_budget_bounds_the_whole_exchange(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    """A tier that never answers is cut by the request's own deadline (not httpx's)."""
    import asyncio

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    router.post(DEV_URL + CHAT).mock(side_effect=hang)
    response = client.post("/generate", json=body(), headers={"X-Request-Timeout": "0.05"})
    assert response.status_code == 504
    assert response.json()["budget_s"] == 0.05


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_bad_timeout_header_is_a_400_naming_it(client: TestClient[Any], value: str) -> None:
    response = client.post("/generate", json=body(), headers={"X-Request-Timeout": value})
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "header:X-Request-Timeout"


def test_unknown_tier_header_lists_the_valid_ones(client: TestClient[Any]) -> None:
    response = client.post("/generate", json=body(), headers={"X-Model-Tier": "staging"})
    assert response.status_code == 400
    problem = response.json()
    assert problem["type"].endswith("/unknown-tier")
    assert problem["valid"] == ["dev", "prod"]


def test_secrets_never_reach_errors_or_logs(
    warm_client: TestClient[Any], router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import MODAL_KEY, MODAL_SECRET

    caplog.set_level("DEBUG")
    router.post(PROD_URL + CHAT).respond(401, text="bad token")
    responses = [
        warm_client.post("/generate", json=body(), headers={"X-Model-Tier": "prod"}),
        warm_client.get("/status"),
        warm_client.get("/v1/models"),
    ]
    for response in responses:
        assert MODAL_KEY not in response.text and MODAL_SECRET not in response.text
        assert MODAL_KEY not in str(response.headers) and MODAL_SECRET not in str(response.headers)
    assert MODAL_KEY not in caplog.text and MODAL_SECRET not in caplog.text


def test_keywords_the_grammar_cannot_enforce_are_checked_after_and_said_so(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    schema = {
        **PERSON_SCHEMA,
        "not": {"properties": {"name": {"const": "Bob"}}, "required": ["name"]},
    }
    router.post(DEV_URL + CHAT).respond(200, json=completion(content='{"name": "Bob", "age": 3}'))
    refused = client.post("/generate", json=body(schema=schema, max_tokens=64))
    assert refused.status_code == 502  # `not` was not enforced by the grammar; the check caught it
    assert refused.json()["reason"] == "schema-violation"
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    served = client.post("/generate", json=body(schema=schema))
    assert served.status_code == 200
    assert served.headers["x-schema-checked-after"] == "not"
