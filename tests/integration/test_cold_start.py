"""Cold-start-aware routing end to end: tiers mocked at the transport (respx), warmth real.

prod is a scale-to-zero Modal tier, presumed cold (ETA 424 s from tiers.toml) until a warm-up
or a success says otherwise; dev is a plain OpenAI server, probed at start-up.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import respx
from litestar.testing import TestClient

from tests.conftest import DEV_URL, PERSON_SCHEMA, PROD_URL, completion, warm_prod

CHAT = "/v1/chat/completions"
BODY = {"prompt": "Invent a person.", "schema": PERSON_SCHEMA}


class Held:
    """Calls to a route whose answers are held (respx counts a call only once answered)."""

    def __init__(self) -> None:
        self.call_count = 0


@pytest.fixture
def held_prod_health(router: respx.MockRouter, request: pytest.FixtureRequest) -> Iterator[Held]:
    """prod's /health as a cold Modal endpoint answers it: held while the container boots
    (here: until the test ends), the way Modal holds a request for up to 150 s."""
    # respx records a call when it is answered: a held one may never be, within the test.
    request.node.add_marker(pytest.mark.uncalled_routes)
    release = threading.Event()
    held = Held()

    async def hold(request: httpx.Request) -> httpx.Response:
        held.call_count += 1
        await asyncio.to_thread(release.wait)  # set from the test's thread at teardown
        return httpx.Response(303, headers={"location": "/health?__modal_call=1"})

    router.get(PROD_URL + "/health", name="prod-health").mock(side_effect=hold)
    yield held
    release.set()


def eventually(condition: Any, within_s: float = 10.0) -> bool:
    """The warm-up runs beside the request: give it a moment to reach the tier."""
    import time

    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def metric(client: TestClient[Any], name: str, **labels: str) -> float:
    """One sample's value from the gateway's own /metrics page (0 when absent)."""
    text = client.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.uncalled_routes
def test_cold_prod_under_allow_is_served_by_dev_and_warmed_once(
    client: TestClient[Any], router: respx.MockRouter, held_prod_health: Held
) -> None:
    dev = router.post(DEV_URL + CHAT).respond(200, json=completion())
    prod = router.post(PROD_URL + CHAT).respond(200, json=completion(model="prod"))
    response = client.post("/generate", json=BODY, headers={"X-Model-Tier": "prod"})
    assert response.status_code == 200
    assert response.headers["x-model-tier-requested"] == "prod"
    assert response.headers["x-model-tier-served"] == "dev"
    assert response.headers["x-fallback-reason"] == "cold-start"
    assert response.json()["output"] == {"name": "Ada", "age": 36}
    assert dev.call_count == 1
    assert prod.call_count == 0  # no request was made to wait for a 7-minute boot
    assert eventually(lambda: held_prod_health.call_count == 1)  # one warm-up probes prod
    status = client.get("/status").json()["prod"]
    assert status["state"] == "warming"
    assert 0 < status["eta_s"] <= 424
    assert metric(client, "gateway_warmups_started_total", tier="prod") == 1


def test_a_hundred_concurrent_requests_to_a_cold_tier_cause_one_warm_up(
    client: TestClient[Any], router: respx.MockRouter, held_prod_health: Held
) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion())

    def call(_: int) -> httpx.Response:
        return client.post("/generate", json=BODY, headers={"X-Model-Tier": "prod"})

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(call, range(100)))
    assert {r.status_code for r in responses} == {200}
    assert {r.headers["x-fallback-reason"] for r in responses} == {"cold-start"}
    assert held_prod_health.call_count == 1
    assert metric(client, "gateway_warmups_started_total", tier="prod") == 1


@pytest.mark.uncalled_routes
def test_cold_prod_under_deny_is_a_503_with_the_eta(
    client: TestClient[Any], router: respx.MockRouter, held_prod_health: Held
) -> None:
    prod = router.post(PROD_URL + CHAT).respond(200, json=completion())
    response = client.post(
        "/generate", json=BODY, headers={"X-Model-Tier": "prod", "X-Tier-Fallback": "deny"}
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "424"  # tiers.toml: expected_cold_start_s
    problem = response.json()
    assert problem["tier"] == "prod"
    assert problem["state"] == "cold"
    assert problem["eta_s"] == 424
    assert prod.call_count == 0
    assert eventually(lambda: held_prod_health.call_count == 1)  # the refusal warms it up


def test_cold_prod_under_wait_holds_until_warm(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    # Booting: 503 from vLLM's /health, then up.
    health = router.get(PROD_URL + "/health").mock(
        side_effect=[httpx.Response(503), httpx.Response(200)]
    )
    prod = router.post(PROD_URL + CHAT).respond(200, json=completion(model="prod"))
    response = client.post(
        "/generate", json=BODY, headers={"X-Model-Tier": "prod", "X-Tier-Fallback": "wait"}
    )
    assert response.status_code == 200
    assert response.headers["x-model-tier-served"] == "prod"
    assert "x-fallback-reason" not in response.headers
    assert health.call_count == 2
    assert prod.call_count == 1
    assert client.get("/status").json()["prod"]["state"] == "warm"


@pytest.mark.uncalled_routes
def test_a_hung_primary_leaves_the_fallback_its_budget(
    warm_client: TestClient[Any], router: respx.MockRouter
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    router.post(PROD_URL + CHAT).mock(side_effect=hang)
    dev = router.post(DEV_URL + CHAT).respond(200, json=completion())
    response = warm_client.post(
        "/generate", json=BODY, headers={"X-Model-Tier": "prod", "X-Request-Timeout": "2"}
    )
    assert response.status_code == 200
    assert response.headers["x-model-tier-served"] == "dev"
    assert response.headers["x-fallback-reason"] == "timeout"
    assert dev.call_count == 1


@pytest.mark.parametrize(
    ("prod_answer", "reason"),
    [
        (httpx.Response(503), "unavailable"),
        (httpx.Response(500), "upstream-error"),
        (httpx.Response(200, json=completion(content='{"name": 7}')), "schema"),
        (httpx.Response(200, json=completion(content='{"name": "Ad')), "schema"),
    ],
)
def test_failures_of_a_warm_primary_retry_once_on_the_fallback(
    warm_client: TestClient[Any], router: respx.MockRouter, prod_answer: httpx.Response, reason: str
) -> None:
    router.post(PROD_URL + CHAT).mock(return_value=prod_answer)
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    response = warm_client.post("/generate", json=BODY, headers={"X-Model-Tier": "prod"})
    assert response.status_code == 200
    assert response.headers["x-model-tier-served"] == "dev"
    assert response.headers["x-fallback-reason"] == reason


def test_truncated_output_retries_on_the_fallback(
    warm_client: TestClient[Any], router: respx.MockRouter
) -> None:
    cut = completion(content='{"name": "Ad')
    cut["choices"][0]["finish_reason"] = "length"
    router.post(PROD_URL + CHAT).respond(200, json=cut)
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    response = warm_client.post("/generate", json=BODY, headers={"X-Model-Tier": "prod"})
    assert response.headers["x-fallback-reason"] == "truncated"
    assert response.headers["x-model-tier-served"] == "dev"


def test_output_that_breaks_the_schema_never_reaches_the_client(
    warm_client: TestClient[Any], router: respx.MockRouter
) -> None:
    bad = completion(content='{"name": "Ada", "age": -3}')
    router.post(PROD_URL + CHAT).respond(200, json=bad)
    router.post(DEV_URL + CHAT).respond(200, json=bad)
    response = warm_client.post("/generate", json=BODY, headers={"X-Model-Tier": "prod"})
    assert response.status_code == 502
    problem = response.json()
    assert problem["type"].endswith("/output-invalid")
    assert problem["reason"] == "schema-violation"
    assert problem["tier"] == "dev"  # the retry's own failure
    assert problem["errors"][0]["path"] == "$.age"
    assert problem["errors"][0]["keyword"] == "minimum"


@pytest.mark.uncalled_routes
def test_a_client_error_is_never_retried_elsewhere(
    warm_client: TestClient[Any], router: respx.MockRouter
) -> None:
    router.post(PROD_URL + CHAT).respond(400, json={"error": {"message": "prompt too long"}})
    dev = router.post(DEV_URL + CHAT).respond(200, json=completion())
    response = warm_client.post("/generate", json=BODY, headers={"X-Model-Tier": "prod"})
    assert response.status_code == 400
    assert dev.call_count == 0


def test_both_tiers_cold_under_allow_is_a_503_with_the_smaller_eta(
    make_settings: Any, make_client: Any, router: respx.MockRouter, held_prod_health: Held
) -> None:
    # dev as a scale-to-zero Modal tier too: presumed cold, ETA 60 s (tiers.toml).
    router.get(DEV_URL + "/health").mock(side_effect=lambda request: httpx.Response(503))
    client = make_client(make_settings(GATEWAY_TIER_DEV_KIND="modal"))
    response = client.post(
        "/generate", json=BODY, headers={"X-Model-Tier": "prod", "X-Request-Timeout": "30"}
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "60"
    assert response.json()["tier"] == "prod"


def test_schema_the_tier_cannot_enforce_is_a_422_before_any_upstream_call(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    before = router.calls.call_count
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
    }
    response = client.post(  # strict mode: by default the schema would be served lowered
        "/generate", json={"prompt": "p", "schema": schema}, headers={"X-Schema-Mode": "strict"}
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/schema-unsupported")
    assert {"path": "$.properties.tags", "keyword": "uniqueItems"}.items() <= problem["errors"][
        0
    ].items()
    assert router.calls.call_count == before


def test_metrics_show_the_fallback(
    client: TestClient[Any], router: respx.MockRouter, held_prod_health: Held
) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    labels = {"tier_requested": "prod", "tier_served": "dev", "fallback_reason": "cold-start"}
    assert metric(client, "gateway_requests_total", **labels) == 0
    client.post("/generate", json=BODY, headers={"X-Model-Tier": "prod"})
    client.post("/generate", json=BODY, headers={"X-Model-Tier": "prod"})
    assert metric(client, "gateway_requests_total", **labels) == 2
    assert metric(client, "gateway_tier_state", tier="prod", state="warming") == 1
    status = client.get("/status").json()["prod"]
    assert status["fallbacks"] == {"cold-start": 2}
    assert status["requests"] == 2


def test_warm_prod_is_called_directly(
    warm_client: TestClient[Any], router: respx.MockRouter
) -> None:
    prod = router.post(PROD_URL + CHAT).respond(200, json=completion(model="prod"))
    response = warm_client.post("/generate", json=BODY, headers={"X-Model-Tier": "prod"})
    assert response.headers["x-model-tier-served"] == "prod"
    assert prod.call_count == 1
    _ = warm_prod  # the fixture's helper, also used by other modules


def test_a_plain_tier_that_is_up_serves_the_first_request_after_start(
    make_client: Any, make_settings: Any, router: respx.MockRouter
) -> None:
    """A self-hosted (kind openai) prod is checked once at start-up. Until that probe
    answers, prod reads as warming with the 424 s cold-start ETA from tiers.toml; start-up
    waits for the answer, so the first request is not sent to dev for a prod that is up."""

    async def slow_health(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)  # a network round trip longer than the app's start
        return httpx.Response(200)

    router.get(PROD_URL + "/health", name="prod-health").mock(side_effect=slow_health)
    router.post(PROD_URL + CHAT).respond(200, json=completion())
    client = make_client(make_settings(GATEWAY_TIER_PROD_KIND="openai"))
    body = {"prompt": "Invent a person.", "schema": PERSON_SCHEMA}
    response = client.post("/generate", json=body, headers={"X-Model-Tier": "prod"})
    assert response.status_code == 200
    assert response.headers["x-model-tier-served"] == "prod"
    assert "x-fallback-reason" not in response.headers
