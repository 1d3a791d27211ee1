"""The app against the hostile stand-in tier (tests/hostile_tier.py), through ``create_app``
and the shipping aiohttp client: every fault is a 502 or 504 naming the tier within its
budget, never a 500; the failure is recorded; and the next request on the same tier gets
its own answer, never one meant for another request."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import PERSON_SCHEMA
from tests.hostile_tier import HostileTier

ANSWER_CAP = 1024 * 1024  # small enough that the huge bodies and the gzip bomb pass it
BUDGET_S = 3.0  # X-Request-Timeout for every call: the drips must be cut by it


@pytest.fixture
def app_for(
    make_settings: Callable[..., Settings], hostile_tier: HostileTier
) -> Iterator[Callable[[], TestClient[Any]]]:
    """A gateway whose dev (openai) and prod (modal) tiers are both the stand-in tier."""
    clients: list[TestClient[Any]] = []

    def make() -> TestClient[Any]:
        settings = make_settings(
            GATEWAY_TIER_DEV_URL=hostile_tier.url, GATEWAY_TIER_PROD_URL=hostile_tier.url
        )
        settings = msgspec.structs.replace(settings, max_answer_bytes=ANSWER_CAP)
        client = TestClient(create_app(settings), raise_server_exceptions=False)  # aiohttp
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def generate(
    client: TestClient[Any], request_id: str, tier: str = "dev", **headers: str
) -> tuple[Any, float]:
    started = time.monotonic()
    response = client.post(
        "/generate",
        json={"prompt": "Invent a person.", "schema": PERSON_SCHEMA},
        headers={
            "X-Request-Id": request_id,
            "X-Model-Tier": tier,
            "X-Request-Timeout": str(BUDGET_S),
            **headers,
        },
    )
    return response, time.monotonic() - started


def assert_own_answer(client: TestClient[Any], request_id: str, tier: str = "dev") -> None:
    response, _ = generate(client, request_id, tier)
    assert response.status_code == 200, response.text
    assert response.json()["output"] == {"name": request_id, "age": 36}


FAULTS_502_504 = [
    ("huge_headers", 502),
    ("huge_header_line", 502),
    ("huge_body", 502),
    ("huge_chunked", 502),
    ("gzip_bomb", 502),
    ("truncated", 502),
    ("reset", 502),
    ("bad_chunking", 502),
    ("cl_te", 502),
    ("garbage", 502),
    ("drip", 504),
    ("drip_head", 504),
    ("deep_json", 502),
    ("invalid_utf8", 502),
    ("deep_output", 502),
]


@pytest.mark.parametrize(("fault", "status"), FAULTS_502_504)
def test_each_fault_is_a_502_or_504_naming_the_tier_and_the_next_call_is_answered(
    app_for: Callable[[], TestClient[Any]], hostile_tier: HostileTier, fault: str, status: int
) -> None:
    client = app_for()
    hostile_tier.script(fault)
    response, took = generate(client, f"fault-{fault}")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["tier"] == "dev"
    assert took < BUDGET_S + 1.5
    assert client.get("/status").json()["dev"]["consecutive_failures"] == 1
    assert_own_answer(client, f"after-{fault}")


@pytest.mark.parametrize("fault", ["continue_100", "early_hints"])
def test_a_1xx_is_skipped_and_the_final_answer_goes_to_its_own_request(
    app_for: Callable[[], TestClient[Any]], hostile_tier: HostileTier, fault: str
) -> None:
    client = app_for()
    hostile_tier.script(fault)
    assert_own_answer(client, f"hinted-{fault}")
    assert_own_answer(client, f"after-{fault}")
    assert client.get("/status").json()["dev"]["consecutive_failures"] == 0


@pytest.mark.parametrize("fault", ["extra_after", "unsolicited"])
def test_bytes_past_one_answer_never_reach_the_next_request(
    app_for: Callable[[], TestClient[Any]], hostile_tier: HostileTier, fault: str
) -> None:
    client = app_for()
    hostile_tier.script(fault)
    assert_own_answer(client, f"first-{fault}")
    time.sleep(0.3)  # real sockets: let the unasked-for answer land on the idle connection
    before = hostile_tier.connections
    assert_own_answer(client, f"second-{fault}")
    assert hostile_tier.connections == before + 1  # that socket was closed, not reused


@pytest.mark.parametrize(
    ("fault", "status"),
    [("location_malformed", 502), ("location_foreign", 502), ("redirect_loop", 504)],
)
def test_a_modal_tier_redirect_outside_its_origin_or_budget_fails_naming_it(
    app_for: Callable[[], TestClient[Any]], hostile_tier: HostileTier, fault: str, status: int
) -> None:
    client = app_for()
    assert client.post("/warmup", json={"tier": "prod", "wait": True}).status_code == 200
    hostile_tier.script(fault)
    response, _ = generate(client, f"fault-{fault}", "prod", **{"X-Tier-Fallback": "deny"})
    assert response.status_code == status, response.text
    assert response.json()["tier"] == "prod"
    assert hostile_tier.foreign_hits == 0  # the prompt never left the tier's origin
    assert client.get("/status").json()["prod"]["consecutive_failures"] == 1
    assert_own_answer(client, f"after-{fault}", "prod")


def test_a_foreign_redirect_falls_back_where_allowed(
    app_for: Callable[[], TestClient[Any]], hostile_tier: HostileTier
) -> None:
    client = app_for()
    assert client.post("/warmup", json={"tier": "prod", "wait": True}).status_code == 200
    hostile_tier.script("location_foreign")  # prod's call; dev's gets a good answer
    response, _ = generate(client, "falls-back", "prod", **{"X-Tier-Fallback": "allow"})
    assert response.status_code == 200, response.text
    assert response.headers["x-model-tier-served"] == "dev"
    assert response.headers["x-fallback-reason"] == "upstream-error"
    assert response.json()["output"] == {"name": "falls-back", "age": 36}


def test_a_303_chain_within_the_origin_is_followed_as_gets(
    app_for: Callable[[], TestClient[Any]], hostile_tier: HostileTier
) -> None:
    client = app_for()
    assert client.post("/warmup", json={"tier": "prod", "wait": True}).status_code == 200
    hostile_tier.script("chain_303")
    assert_own_answer(client, "chained", "prod")
    hops = [(s.method, s.path, s.body) for s in hostile_tier.seen if s.path != "/health"]
    assert hops[:4] == [
        ("POST", "/v1/chat/completions", hops[0][2]),
        ("GET", "/result/0", b""),
        ("GET", "/result/1", b""),
        ("GET", "/result/2", b""),
    ]


def test_a_non_modal_tier_never_follows_a_redirect(
    app_for: Callable[[], TestClient[Any]], hostile_tier: HostileTier
) -> None:
    client = app_for()
    hostile_tier.script("chain_303")
    response, _ = generate(client, "no-follow")
    assert response.status_code == 502
    assert response.json()["tier"] == "dev"
    assert not [s for s in hostile_tier.seen if s.path.startswith("/result/")]
