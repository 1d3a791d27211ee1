"""API keys on the running app: 401, 403, 429, rotation without a restart, spend by key
name, and no key or tier credential in any output. Tiers behind respx at the transport seam."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
import respx
from litestar.testing import TestClient

from gateway.access.keys import KeyRecord, add_key, hash_key, new_key
from gateway.access.quotas import FLUSH_EVERY_S
from gateway.ops.cli import main
from gateway.settings import Settings
from tests.conftest import DEV_URL, MODAL_KEY, MODAL_SECRET, PROD_URL, completion, warm_prod
from tests.redis_server import RedisServer

CHAT = "/v1/chat/completions"


class Keys:
    """A keys file with an admin, a dev-only client and a client of both tiers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.admin = self.add("ops", ("dev", "prod"), role="admin")
        self.dev_only = self.add("team-dev", ("dev",))
        self.both = self.add("team-both", ("dev", "prod"))

    def add(self, name: str, tiers: tuple[str, ...], **extra: Any) -> str:
        key = new_key()
        add_key(self.path, KeyRecord(name=name, hash=hash_key(key), tiers=tiers, **extra))
        return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys.json")


@pytest.fixture
def keyed(
    make_client: Callable[[Settings], TestClient[Any]],
    make_settings: Callable[..., Settings],
    keys: Keys,
) -> TestClient[Any]:
    return make_client(make_settings(GATEWAY_KEYS_FILE=str(keys.path)))


def problem_code(response: Any) -> str:
    """The problem's type: RFC 9457's ``type``, or on /v1/ OpenAI's envelope's ``code``."""
    body = response.json()
    if "error" in body:
        return str(body["error"]["code"])
    assert response.headers["content-type"].startswith("application/problem+json")
    return str(body["type"]).rsplit("/", 1)[-1]


def assert_401(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert problem_code(response) == "unauthenticated"


def test_health_needs_no_key(keyed: TestClient[Any]) -> None:
    assert keyed.get("/health").status_code == 200


@pytest.mark.parametrize("path", ["/ready", "/v1/models", "/status", "/metrics", "/docs"])
def test_every_other_route_needs_a_key(keyed: TestClient[Any], path: str) -> None:
    assert_401(keyed.get(path))


@pytest.mark.parametrize(
    "header",
    [
        "Bearer tg-not-a-key-we-issued",
        "Bearer",
        "Basic b3BzOm9wcw==",
        "tg-no-scheme",
        "Bearer  tg-two-spaces",
        "Bearer " + "x" * 64 * 1024,  # a huge header
    ],
)
def test_bad_keys_are_401_problems(keyed: TestClient[Any], header: str) -> None:
    response = keyed.get("/v1/models", headers={"Authorization": header})
    assert_401(response)
    sent = header.split()[-1]
    assert sent == "Bearer" or sent not in response.text


def test_a_key_with_whitespace_is_401(keyed: TestClient[Any], keys: Keys) -> None:
    assert_401(keyed.get("/v1/models", headers={"Authorization": f"Bearer {keys.both} "}))
    assert_401(keyed.get("/v1/models", headers={"Authorization": f"Bearer {keys.both}\t"}))


def test_a_client_key_reads_but_does_not_operate(keyed: TestClient[Any], keys: Keys) -> None:
    assert keyed.get("/v1/models", headers=bearer(keys.dev_only)).status_code == 200
    assert keyed.get("/ready", headers=bearer(keys.dev_only)).status_code == 200
    for method, path in [("GET", "/status"), ("GET", "/metrics"), ("POST", "/warmup")]:
        response = keyed.request(method, path, headers=bearer(keys.dev_only), json={"tier": "dev"})
        assert response.status_code == 403, (path, response.text)
        assert response.json()["key"] == "team-dev"


def test_an_admin_key_operates(keyed: TestClient[Any], keys: Keys) -> None:
    assert keyed.get("/status", headers=bearer(keys.admin)).status_code == 200
    assert keyed.get("/metrics", headers=bearer(keys.admin)).status_code == 200


def test_rpm_limit_is_429_with_retry_after_and_ratelimit_headers(
    keyed: TestClient[Any], keys: Keys
) -> None:
    limited = keys.add("bursty", ("dev",), rpm=2)
    keyed.app.state.gate.keys.refresh()  # what the reload task does every RELOAD_EVERY_S
    first = keyed.get("/v1/models", headers=bearer(limited))
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert keyed.get("/v1/models", headers=bearer(limited)).status_code == 200
    refused = keyed.get("/v1/models", headers=bearer(limited))
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert problem_code(refused) == "rate-limited"
    # Another key is not held back by this one.
    assert keyed.get("/v1/models", headers=bearer(keys.dev_only)).status_code == 200


def test_revoke_and_rotate_without_a_restart(
    keyed: TestClient[Any], keys: Keys, capsys: Any
) -> None:
    assert keyed.get("/v1/models", headers=bearer(keys.dev_only)).status_code == 200
    file = ["keys", "--file", str(keys.path)]
    assert main([*file, "revoke", "team-dev"]) == 0
    assert main([*file, "create", "team-dev", "--tiers", "dev"]) == 0
    rotated = capsys.readouterr().out.splitlines()[-1]
    # The app's own reload task (every RELOAD_EVERY_S = 2 s) picks the change up.
    deadline = time.monotonic() + 10
    while keyed.get("/v1/models", headers=bearer(keys.dev_only)).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.1)
    assert keyed.get("/v1/models", headers=bearer(rotated)).status_code == 200


def test_keys_off_by_default(client: TestClient[Any]) -> None:
    assert client.get("/v1/models").status_code == 200


def sdk(client: TestClient[Any], key: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=str(client.base_url) + "/v1", api_key=key, http_client=client, max_retries=0
    )


def test_the_openai_sdk_works_with_a_client_key(
    keyed: TestClient[Any], keys: Keys, router: respx.MockRouter
) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    result = sdk(keyed, keys.dev_only).chat.completions.with_raw_response.create(
        model="dev", messages=[{"role": "user", "content": "hi"}]
    )
    assert result.parse().usage is not None
    # The answer's spend header is what the key's usage grew by.
    spent = keyed.get("/status", headers=bearer(keys.admin)).json()["dev"]["keys"]["team-dev"]
    assert spent["requests"] == 1
    assert float(result.headers["x-gpu-seconds"]) == pytest.approx(spent["gpu_seconds"], abs=1e-6)
    assert float(result.headers["x-gpu-cost-usd"]) == pytest.approx(spent["cost_usd"], abs=1e-9)
    with pytest.raises(openai.AuthenticationError):
        sdk(keyed, "tg-wrong").chat.completions.create(
            model="dev", messages=[{"role": "user", "content": "hi"}]
        )


def test_a_tier_the_key_lacks_is_403(
    keyed: TestClient[Any], keys: Keys, router: respx.MockRouter
) -> None:
    before = router.calls.call_count  # the start-up probe of dev may be there
    with pytest.raises(openai.PermissionDeniedError) as info:
        sdk(keyed, keys.dev_only).chat.completions.create(
            model="prod", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body is not None
    assert router.calls.call_count == before  # refused, not quietly served by dev


def test_spend_by_key_name_in_status_and_metrics(
    keyed: TestClient[Any], keys: Keys, router: respx.MockRouter
) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    for _ in range(3):
        response = keyed.post(
            CHAT,
            headers=bearer(keys.both),
            json={"model": "dev", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200, response.text
    status = keyed.get("/status", headers=bearer(keys.admin)).json()
    spent = status["dev"]["keys"]["team-both"]
    assert spent["requests"] == 3 and spent["tokens"] == 63
    assert spent["gpu_seconds"] > 0 and spent["cost_usd"] > 0
    metrics = keyed.get("/metrics", headers=bearer(keys.admin)).text
    assert 'gateway_key_gpu_seconds_total{key="team-both",tier="dev"}' in metrics
    assert 'gateway_key_requests_total{key="team-both",tier="dev"} 3.0' in metrics


class Session:
    """Every output of a session with keys on, a tier echoing the request's headers back in
    its error body (as a misconfigured proxy does), and the Modal proxy token configured."""

    def __init__(self, client: TestClient[Any], keys: Keys, router: respx.MockRouter) -> None:
        self.unknown = "tg-unknown-" + keys.both[3:]
        router.get(PROD_URL + "/health", name="prod-health").respond(200)
        client.headers.update(bearer(keys.admin))
        warm_prod(client, router)
        router.post(PROD_URL + CHAT).mock(side_effect=self.echo)
        router.post(DEV_URL + CHAT).mock(side_effect=self.echo)
        outputs: list[str] = []
        for key in (keys.admin, keys.both, keys.dev_only, self.unknown, ""):
            for tier in ("prod", "dev"):
                response = client.post(
                    CHAT,
                    headers=bearer(key),
                    json={"model": tier, "messages": [{"role": "user", "content": "hi"}]},
                )
                outputs += [response.text, str(response.headers)]
        for path in ("/status", "/metrics", "/ready", "/v1/models"):
            response = client.get(path)
            outputs += [response.text, str(response.headers)]
        self.responses = "\n".join(outputs)
        self.tier_saw = "\n".join(str(call.request.headers) for call in router.calls)

    @staticmethod
    def echo(request: Any) -> Any:
        import httpx

        echoed = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
        return httpx.Response(400, json={"error": {"message": f"bad request, headers: {echoed}"}})


def logged(caplog: Any) -> str:
    return "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)


def test_no_client_key_in_any_output(
    keyed: TestClient[Any], keys: Keys, router: respx.MockRouter, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    session = Session(keyed, keys, router)
    text = session.responses + logged(caplog)
    for sentinel in (keys.admin, keys.dev_only, keys.both, session.unknown):
        assert sentinel not in text
        assert sentinel not in session.tier_saw  # the tier gets the gateway's credentials only
    # The log names the key, or says it was unknown.
    keyed_lines = [r for r in caplog.records if getattr(r, "key", None) is not None]
    assert {"team-both", "team-dev", "ops", "unknown"} <= {r.key for r in keyed_lines}


def test_no_tier_credential_in_any_output(
    keyed: TestClient[Any], keys: Keys, router: respx.MockRouter, caplog: Any
) -> None:
    """The Modal proxy token, echoed back by the tier: the redactor's part (gateway.redact)."""
    caplog.set_level(logging.DEBUG)
    session = Session(keyed, keys, router)
    text = session.responses + logged(caplog)
    for sentinel in (MODAL_KEY, MODAL_SECRET):
        assert sentinel not in text


def test_with_limits_in_redis_tokens_reach_the_store_by_the_flusher_and_at_shutdown(
    make_client: Callable[[Settings], TestClient[Any]],
    make_settings: Callable[..., Settings],
    keys: Keys,
    router: respx.MockRouter,
    redis_server: RedisServer,
) -> None:
    limited = keys.add("metered", ("dev",), tpm=10_000)
    router.post(DEV_URL + CHAT).respond(200, json=completion())  # 21 tokens an answer
    settings = make_settings(
        GATEWAY_KEYS_FILE=str(keys.path),
        GATEWAY_LIMITS_STORE=redis_server.url,
    )
    client = make_client(settings)
    store = redis.Redis.from_url(redis_server.url)

    def tokens_in_store() -> int:
        found = store.keys(f"{settings.state_prefix}:limits*gateway-tpm*")
        return sum(int(store.get(k) or 0) for k in found)

    def ask() -> Any:
        return client.post(
            CHAT,
            headers=bearer(limited),
            json={"model": "dev", "messages": [{"role": "user", "content": "hi"}]},
        )

    try:
        assert ask().status_code == 200
        deadline = time.monotonic() + 10 * FLUSH_EVERY_S
        while tokens_in_store() != 21:  # the app's flusher, every FLUSH_EVERY_S
            assert time.monotonic() < deadline, "held tokens never reached Redis"
            time.sleep(FLUSH_EVERY_S / 5)
        client.app.state.gate.flush_every_s = 3600.0  # from the next wake-up on
        time.sleep(3 * FLUSH_EVERY_S)  # the flusher's wait now ends in an hour
        assert ask().headers["x-ratelimit-remaining-tokens"] == str(10_000 - 21)
        time.sleep(2 * FLUSH_EVERY_S)
        assert tokens_in_store() == 21  # held
        client.__exit__(None, None, None)  # shutdown: the lifespan flushes what is held
        assert tokens_in_store() == 42
    finally:
        store.close()
