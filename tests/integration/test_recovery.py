"""A down tier comes back with no operator: a real loopback tier killed and restarted serves
again within the backoff, and a scale-to-zero tier is tried by one request at a time.

The backoffs are shortened in a config file (as an operator may); the behaviour is the one
unit-tested on a ManualClock in tests/unit/test_recovery.py, here with real sockets (and,
where the tier is mocked at the transport, on the app's injected clock)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from litestar.testing import TestClient

import gateway
from gateway.app import create_app
from gateway.clock import ManualClock
from gateway.settings import Settings, load_settings
from tests.conftest import BASE_ENV, DEV_URL, PERSON_SCHEMA, completion
from tests.integration.openai_standin import standin_tier

CONFIG = Path(gateway.__file__).resolve().parent.parent / "config"
BODY = {"prompt": "Invent a person.", "schema": PERSON_SCHEMA}
DENY = {"x-tier-fallback": "deny"}


def config_file(
    tmp_path: Path, dev_kind: str, first_s: float, cap_s: float, silence_s: float = 5.0
) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
default_tier = "dev"
tiers_file = "{CONFIG / "tiers.toml"}"

[tiers.dev]
kind = "{dev_kind}"
fallback_mode = "deny"
down_retry_after_s = {first_s}
down_retry_max_s = {cap_s}
down_after_silence_s = {silence_s}

[tiers.prod]
kind = "modal"
"""
    )
    return path


def wait_for(check: Callable[[], bool], within_s: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {within_s} s")


def test_a_killed_tier_restarted_10_s_later_serves_again_within_the_backoff(
    tmp_path: Path,
) -> None:
    """Scaled down from the issue's 10 s restart: killed, back 1 s later, backoff 0.5 s
    doubling to 1 s, down after 0.5 s without an answer (5 s by default); a probe (free on
    an `openai` tier) finds it, no request needed."""
    with standin_tier() as tier:
        port = tier.server_address[1]
        settings = load_settings(
            config_file(tmp_path, "openai", 0.5, 1.0, silence_s=0.5),
            environ={
                "GATEWAY_TIER_DEV_URL": f"http://127.0.0.1:{port}",
                "GATEWAY_LOCAL_TIER": "off",
            },
        )
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
    try:
        # the tier is gone (killed) and silent past down_after_silence_s (the start-up may
        # have seen it healthy): three failures make it down
        time.sleep(0.5)
        answers = [client.post("/generate", json=BODY) for _ in range(3)]
        assert [r.status_code for r in answers] == [503, 503, 503]
        down = client.post("/generate", json=BODY)
        assert down.status_code == 503
        assert down.json()["state"] == "down"
        assert "down" in down.json()["detail"] and "tried again" in down.json()["detail"]
        for response in (answers[-1], down):
            assert 1 <= int(response.headers["retry-after"]) <= 2  # the next trial, not 5 s

        ready = client.get("/ready")
        assert ready.status_code == 503  # the only tier is down
        assert ready.json()["tiers"]["dev"]["state"] == "down"
        assert ready.json()["tiers"]["dev"]["down_since"]
        assert ready.json()["tiers"]["dev"]["next_trial"]
        status = client.get("/status").json()["dev"]
        assert status["state"] == "down"
        assert status["down_since"] and status["next_trial"]

        time.sleep(1.0)  # down for a second more: a trial or two fail meanwhile
        with standin_tier(port=port) as restarted:
            # Within the cap (1 s) and the loop's tick (1 s); bounded loosely here (a shared
            # machine), exactly on a ManualClock in tests/unit/test_recovery.py.
            wait_for(lambda: client.get("/status").json()["dev"]["state"] == "warm", 10)
            assert restarted.health_calls >= 1  # a probe found it, no request was needed
            served = client.post("/generate", json=BODY)
            assert served.status_code == 200, served.text
            assert client.get("/ready").status_code == 200
    finally:
        client.__exit__(None, None, None)


@pytest.fixture
def modal_dev(tmp_path: Path) -> Settings:
    env = {**BASE_ENV, "GATEWAY_TIER_DEV_KIND": "modal"}
    return load_settings(config_file(tmp_path, "modal", 1.5, 3.0), environ=env)


def test_a_down_scale_to_zero_tier_is_tried_by_one_request_after_the_backoff(
    modal_dev: Settings,
) -> None:
    """No probe wakes its GPU: the first request after the backoff is the trial. Only the
    tier is mocked here, so time is the app's injected clock, moved by the test."""
    # The /health route is there to show that nothing calls it.
    router = respx.MockRouter(assert_all_called=False)
    health = router.get(DEV_URL + "/health").respond(200)
    chat = router.post(DEV_URL + "/v1/chat/completions")
    chat.side_effect = [httpx.Response(500)] * 4 + [httpx.Response(200, json=completion())] * 2
    clock = ManualClock(datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    app = create_app(modal_dev, transport=httpx.MockTransport(router.async_handler), clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        statuses = [client.post("/generate", json=BODY, headers=DENY).status_code for _ in range(3)]
        assert statuses == [502, 502, 502]  # the tier's 500s: now down

        refused = client.post("/generate", json=BODY, headers=DENY)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] in ("1", "2")  # the next trial, 1.5 s away
        assert chat.call_count == 3  # refused without calling the tier

        client.blocking_portal.call(clock.advance, 1.4)
        assert client.post("/generate", json=BODY, headers=DENY).status_code == 503
        assert chat.call_count == 3  # 0.1 s before the trial is due: still refused
        client.blocking_portal.call(clock.advance, 0.1)  # due: the next request is the trial
        trial = client.post("/generate", json=BODY, headers=DENY)
        assert trial.status_code == 502  # it failed: down again, for twice as long
        assert chat.call_count == 4
        assert client.post("/generate", json=BODY, headers=DENY).status_code == 503
        assert client.get("/status").json()["dev"]["trials"] == 1

        client.blocking_portal.call(clock.advance, 3.0)  # the doubled backoff ran out
        assert client.post("/generate", json=BODY, headers=DENY).status_code == 200
        assert client.get("/status").json()["dev"]["state"] == "warm"
        assert client.post("/generate", json=BODY, headers=DENY).status_code == 200
        assert health.call_count == 0  # nothing probed the scale-to-zero tier


def test_a_refused_openai_tier_is_described_by_its_state_not_as_cold(
    make_settings: Callable[..., Settings], router: respx.MockRouter
) -> None:
    """An `openai` tier whose /health says 503 at start-up is warming, not cold; a client
    that will not wait its ETA is refused with what is true."""
    router.routes["dev-health"].side_effect = [httpx.Response(503)] * 1000
    app = create_app(make_settings(), transport=httpx.MockTransport(router.async_handler))
    with TestClient(app, raise_server_exceptions=False) as client:
        refused: Any = client.post(
            "/generate", json=BODY, headers={**DENY, "x-request-timeout": "5"}
        )
    assert refused.status_code == 503
    problem = refused.json()
    assert "cold" not in problem["detail"]
    assert problem["state"] == "warming"
