"""The app on a Redis warmth store that fails: requests are still served from local state,
``/ready`` stays ready but says the store is degraded, ``/status`` says so on every tier,
``gateway_store_errors_total`` counts it, and the app rejoins Redis once it is back."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import respx
from litestar.testing import TestClient

from gateway.settings import Settings
from tests.conftest import DEV_URL, PERSON_SCHEMA, completion
from tests.redis_server import RedisServer

REJOIN_WITHIN_S = 5.0  # rejoin_after_s is 1 s; the rest is slack for a loaded machine


def store_errors(client: TestClient[Any]) -> float:
    found = re.search(r"^gateway_store_errors_total (\S+)$", client.get("/metrics").text, re.M)
    assert found is not None
    return float(found.group(1))


def test_redis_down_at_start_then_back(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], TestClient[Any]],
    router: respx.MockRouter,
    redis_server: RedisServer,
) -> None:
    router.post(DEV_URL + "/v1/chat/completions").respond(200, json=completion())
    redis_server.stop()  # down before the gateway starts
    client = make_client(make_settings(GATEWAY_STATE=redis_server.url))

    answer = client.post("/generate", json={"prompt": "p", "schema": PERSON_SCHEMA})
    assert answer.status_code == 200 and answer.json()["output"] == {"name": "Ada", "age": 36}
    ready = client.get("/ready")
    assert ready.status_code == 200  # a degraded store is not an outage of the gateway
    assert ready.json()["store"]["backend"] == "redis"
    assert ready.json()["store"]["status"] == "degraded"
    assert ready.json()["store"]["last_error"]  # the failure's class, never the URL
    status = client.get("/status").json()
    assert status["dev"]["state"] == "warm"  # learned locally, from the request above
    assert status["dev"]["store"]["status"] == "degraded"
    assert store_errors(client) >= 1

    redis_server.start()
    deadline = time.monotonic() + REJOIN_WITHIN_S
    while client.get("/ready").json()["store"]["status"] != "ok":
        assert time.monotonic() < deadline, "the gateway did not rejoin Redis"
        time.sleep(0.2)
    assert client.get("/status").json()["dev"]["store"]["status"] == "ok"
    again = client.post("/generate", json={"prompt": "p", "schema": PERSON_SCHEMA})
    assert again.status_code == 200


def test_redis_frozen_mid_run_does_not_hold_requests(
    make_settings: Callable[..., Settings],
    make_client: Callable[[Settings], TestClient[Any]],
    router: respx.MockRouter,
    redis_server: RedisServer,
) -> None:
    router.post(DEV_URL + "/v1/chat/completions").respond(200, json=completion())
    client = make_client(make_settings(GATEWAY_STATE=redis_server.url))
    assert client.get("/ready").json()["store"]["status"] == "ok"

    redis_server.pause()  # open connections, no answers: a swamped Redis
    try:
        started = time.monotonic()
        for _ in range(5):
            answer = client.post("/generate", json={"prompt": "p", "schema": PERSON_SCHEMA})
            assert answer.status_code == 200
        # Each Redis call is bounded by state_timeout_s (0.25 s), then Redis is skipped for
        # 1 s; unbounded, the first request would hang for ever (the bound is loose on purpose)
        assert time.monotonic() - started < 10.0
        assert client.get("/status").json()["dev"]["store"]["status"] == "degraded"
    finally:
        redis_server.resume()
