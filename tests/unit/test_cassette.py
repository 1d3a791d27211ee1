"""Cassette keys, file format, redaction and the recording/replaying transport (respx
stands in for the real server)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import respx

from gateway.testing.cassette import Cassette, CassetteError, request_key
from gateway.testing.inventory import inventory, parse_age
from gateway.testing.pytest_plugin import resolve_mode
from gateway.testing.redact import REDACTED, Redactor
from gateway.testing.transport import CassetteMissing, CassetteTransport

TIER_URL = "http://tier.test:9000"
CHAT = {
    "model": "dev",
    "messages": [{"role": "user", "content": "2+2?"}],
    "temperature": 0.5,
    "max_tokens": 16,
    "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {}}},
}
ANSWER = {
    "id": "cmpl-1",
    "model": "dev",
    "choices": [{"index": 0, "message": {"content": '{"a": 4}'}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
}


def key(body: dict[str, object], tier: str = "dev") -> str:
    return request_key(
        tier=tier, method="POST", path="/v1/chat/completions", body=json.dumps(body).encode()
    )


# --- keys --------------------------------------------------------------------------------


def test_key_ignores_volatile_fields_and_member_order() -> None:
    reordered = dict(reversed(list(CHAT.items())))
    assert key(CHAT) == key(reordered) == key({**CHAT, "user": "u-42", "metadata": {"t": 1}})


def test_key_treats_integral_floats_as_ints() -> None:
    assert key({**CHAT, "temperature": 1}) == key({**CHAT, "temperature": 1.0})


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "3+3?"}]},
        {"temperature": 0.7},
        {"max_tokens": 17},
        {"model": "prod"},
        {"response_format": {"type": "json_object"}},
        {"seed": 3},
    ],
)
def test_key_changes_with_what_decides_the_answer(change: dict[str, object]) -> None:
    assert key({**CHAT, **change}) != key(CHAT)


def test_key_depends_on_tier() -> None:
    assert key(CHAT, tier="dev") != key(CHAT, tier="prod")


# --- redaction ---------------------------------------------------------------------------


def test_redactor_strips_credentials_by_name() -> None:
    r = Redactor()
    headers = r.headers(
        {
            "Modal-Key": "wk-abc",
            "Modal-Secret": "ws-abc",
            "Authorization": "Bearer sk-abc",
            "X-Api-Key": "abc",
            "Accept": "application/json",
        }
    )
    assert headers == {
        "modal-key": REDACTED,
        "modal-secret": REDACTED,
        "authorization": REDACTED,
        "x-api-key": REDACTED,
        "accept": "application/json",
    }
    body = r.json({"api_key": "sk-1", "max_tokens": 16, "nested": [{"token": "t-1"}]})
    assert body == {"api_key": REDACTED, "max_tokens": 16, "nested": [{"token": REDACTED}]}
    assert (
        r.url("https://u:pw@h.test/r?token=abc&x=1") == "https://h.test/r?token=%5BREDACTED%5D&x=1"
    )


def test_redactor_replaces_known_secret_values_anywhere() -> None:
    r = Redactor.from_environment(environ={"GATEWAY_MODAL_SECRET": "ws-0123456789", "HOME": "/h"})
    assert r.scrub_text("echo: ws-0123456789!") == f"echo: {REDACTED}!"
    assert r.scrub_text("/h stays") == "/h stays"


# --- the transport -----------------------------------------------------------------------


def recorder(path: Path, mode: str, **kw: object) -> CassetteTransport:
    return CassetteTransport(
        Cassette.load(path, test="t::x"),
        mode=mode,  # type: ignore[arg-type]
        scope="tier",
        tiers={"dev": TIER_URL},
        redactor=Redactor(["ws-0123456789"]),
        **kw,  # type: ignore[arg-type]
    )


async def post(transport: CassetteTransport, body: dict[str, object]) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport, base_url=TIER_URL) as client:
        return await client.post(
            "/v1/chat/completions",
            json=body,
            headers={"Modal-Secret": "ws-0123456789", "X-Request-Id": "r1"},
        )


@respx.mock(assert_all_called=True)
async def test_record_then_replay_offline(tmp_path: Path, respx_mock: respx.MockRouter) -> None:
    path = tmp_path / "c.json"
    route = respx_mock.post(f"{TIER_URL}/v1/chat/completions").respond(
        200, json=ANSWER, headers={"x-tier": "a", "set-cookie": "s=ws-0123456789"}
    )
    rec = recorder(path, "record")
    live = await post(rec, CHAT)
    assert rec.finish() is True
    text = path.read_text()
    assert "ws-0123456789" not in text
    assert "s=ws" not in text
    data = json.loads(text)
    (interaction,) = data["interactions"]
    assert interaction["tier"] == "dev"
    assert interaction["response"]["json"] == ANSWER
    assert interaction["latency_ms"] >= 0
    assert data["test"] == "t::x"

    calls = route.call_count
    replay = recorder(path, "replay")
    again = await post(replay, {**CHAT, "user": "someone-else"})  # volatile: same key
    assert route.call_count == calls  # nothing reached the "network"
    assert again.json() == live.json()
    assert again.headers["x-tier"] == "a"
    assert replay.finish() is False


async def test_replay_miss_names_the_cassette_and_how_to_record(tmp_path: Path) -> None:
    rec = recorder(tmp_path / "none.json", "replay", record_hint="run RECORD")
    with pytest.raises(
        CassetteMissing, match=r"none\.json \(the file does not exist\); run RECORD"
    ):
        await post(rec, CHAT)
    assert rec.misses
    assert "tier dev" in rec.misses[0]


@respx.mock
async def test_same_request_twice_is_answered_in_order(
    tmp_path: Path, respx_mock: respx.MockRouter
) -> None:
    second = {**ANSWER, "id": "cmpl-2"}
    respx_mock.post(f"{TIER_URL}/v1/chat/completions").mock(
        side_effect=[httpx.Response(200, json=ANSWER), httpx.Response(200, json=second)]
    )
    rec = recorder(tmp_path / "c.json", "record")
    await post(rec, CHAT)
    await post(rec, CHAT)
    rec.finish()
    replay = recorder(tmp_path / "c.json", "replay")
    ids = [(await post(replay, CHAT)).json()["id"] for _ in range(3)]
    assert ids == ["cmpl-1", "cmpl-2", "cmpl-2"]


@respx.mock
async def test_refresh_rerecords_and_record_keeps(
    tmp_path: Path, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(f"{TIER_URL}/v1/chat/completions")
    route.respond(200, json=ANSWER)
    first = recorder(tmp_path / "c.json", "record")
    await post(first, CHAT)
    first.finish()

    route.respond(200, json={**ANSWER, "id": "cmpl-new"})
    keep = recorder(tmp_path / "c.json", "record")
    assert (await post(keep, CHAT)).json()["id"] == "cmpl-1"  # recorded answer reused
    assert keep.finish() is False
    fresh = recorder(tmp_path / "c.json", "refresh")
    assert (await post(fresh, CHAT)).json()["id"] == "cmpl-new"
    assert fresh.finish() is True
    assert Cassette.load(tmp_path / "c.json").interactions[0].response["json"]["id"] == "cmpl-new"


async def test_probes_are_answered_in_replay_and_not_recorded(tmp_path: Path) -> None:
    rec = recorder(tmp_path / "c.json", "replay")
    async with httpx.AsyncClient(transport=rec, base_url=TIER_URL) as client:
        assert (await client.get("/health")).status_code == 200
    assert rec.misses == []
    assert rec.finish() is False


class OnDemandTier:
    """Stands in for ``EmbeddedTier`` (which has its own tests with a real process)."""

    def __init__(self, failure: str | None = None) -> None:
        self.starts = 0
        self.failure = failure

    @property
    def started(self) -> bool:
        return self.starts > 0

    def ensure_up(self) -> str:
        self.starts += 1
        if self.failure:
            raise RuntimeError(self.failure)
        return TIER_URL

    async def aensure_up(self) -> str:
        return self.ensure_up()


@respx.mock(assert_all_called=True)
async def test_an_on_demand_tier_starts_only_for_a_request_the_cassette_cannot_answer(
    tmp_path: Path, respx_mock: respx.MockRouter
) -> None:
    path = tmp_path / "c.json"
    chat = respx_mock.post(f"{TIER_URL}/v1/chat/completions").respond(200, json=ANSWER)
    first = recorder(path, "record")
    await post(first, CHAT)
    first.finish()

    tier = OnDemandTier()
    rec = recorder(path, "record", on_demand={"dev": tier})
    async with httpx.AsyncClient(transport=rec, base_url=TIER_URL) as client:
        assert (await client.get("/health")).status_code == 200  # "up", and no socket opened
    assert (await post(rec, CHAT)).json() == ANSWER  # from the cassette
    assert tier.starts == 0
    assert chat.call_count == 1

    await post(rec, {**CHAT, "max_tokens": 17})  # a miss: started, then sent
    assert tier.starts == 1
    assert chat.call_count == 2
    health = respx_mock.get(f"{TIER_URL}/health").respond(503)
    async with httpx.AsyncClient(transport=rec, base_url=TIER_URL) as client:
        assert (await client.get("/health")).status_code == 503  # started: it answers itself
    assert health.called


@respx.mock
async def test_refresh_starts_an_on_demand_tier_even_for_a_recorded_request(
    tmp_path: Path, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(f"{TIER_URL}/v1/chat/completions").respond(200, json=ANSWER)
    first = recorder(tmp_path / "c.json", "record")
    await post(first, CHAT)
    first.finish()
    tier = OnDemandTier()
    await post(recorder(tmp_path / "c.json", "refresh", on_demand={"dev": tier}), CHAT)
    assert tier.starts == 1


@respx.mock
def test_a_sync_client_starts_an_on_demand_tier_too(
    tmp_path: Path, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(f"{TIER_URL}/v1/chat/completions").respond(200, json=ANSWER)
    tier = OnDemandTier()
    rec = recorder(tmp_path / "c.json", "record", on_demand={"dev": tier})
    with httpx.Client(transport=rec, base_url=TIER_URL) as client:
        assert client.get("/health").status_code == 200
        assert tier.starts == 0
        assert client.post("/v1/chat/completions", json=CHAT).json() == ANSWER
    assert tier.starts == 1


@respx.mock(assert_all_mocked=True)
async def test_an_on_demand_tier_that_fails_to_start_raises_and_is_kept(tmp_path: Path) -> None:
    rec = recorder(tmp_path / "c.json", "record", on_demand={"dev": OnDemandTier("it exited")})
    with pytest.raises(RuntimeError, match="it exited"):
        await post(rec, CHAT)
    assert [str(e) for e in rec.start_errors] == ["it exited"]  # for the plugin to raise
    assert rec.misses == []
    assert rec.finish() is False


def test_unreadable_cassette_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CassetteError, match=r"bad\.json"):
        Cassette.load(bad)


# --- inventory ---------------------------------------------------------------------------


def test_parse_age() -> None:
    assert parse_age("7d") == 7 * 86400
    assert parse_age("36h") == 36 * 3600
    assert parse_age("90m") == 5400
    assert parse_age("42") == 42
    with pytest.raises(ValueError, match="not an age"):
        parse_age("a week")


def write(path: Path, test: str, when: datetime) -> None:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    interaction = {"key": "k", "tier": "dev", "latency_ms": 1.0, "recorded_at": stamp,
                   "request": {}, "response": {"status": 200}}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1, "test": test, "interactions": [interaction]}))


def test_inventory_flags_stale_and_unused(tmp_path: Path) -> None:
    now = datetime(2026, 11, 27, tzinfo=UTC)
    write(tmp_path / "a" / "fresh.json", "t.py::fresh", now - timedelta(days=1))
    write(tmp_path / "a" / "old.json", "t.py::old", now - timedelta(days=9))
    write(tmp_path / "gone.json", "t.py::gone", now)
    (tmp_path / "broken.json").write_text("[]")
    tests = {"t.py::fresh", "t.py::old"}
    entries = {
        e.path.name: e for e in inventory(tmp_path, max_age_s=7 * 86400, tests=tests, now=now)
    }
    assert entries["fresh.json"].status == "ok"
    assert entries["old.json"].status == "stale"
    assert entries["gone.json"].status == "unused"
    assert entries["broken.json"].status == "unreadable"
    assert entries["old.json"].tiers == ("dev",)


@pytest.mark.parametrize(
    ("flag", "env", "mode"),
    [
        (None, {}, "replay"),
        (None, {"RECORD_FIXTURES": "true"}, "record"),
        (None, {"RECORD_FIXTURES": "1"}, "record"),
        (None, {"RECORD_FIXTURES": "refresh"}, "refresh"),
        (None, {"RECORD_FIXTURES": "false"}, "replay"),
        ("replay", {"RECORD_FIXTURES": "true"}, "replay"),  # the flag wins
    ],
)
def test_mode_from_flag_then_environment(flag: str | None, env: dict[str, str], mode: str) -> None:
    assert resolve_mode(flag, env) == mode


def test_unknown_record_fixtures_value_is_a_usage_error() -> None:
    with pytest.raises(pytest.UsageError, match="RECORD_FIXTURES='sometimes'"):
        resolve_mode(None, {"RECORD_FIXTURES": "sometimes"})


def test_the_plugin_imports_nothing_heavy() -> None:
    """pytest imports the plugin in every session where the gateway is installed."""
    code = (
        "import sys, gateway.testing.pytest_plugin; "
        "print(sorted(m for m in ('httpx', 'litestar', 'msgspec', 'jsonschema_rs', "
        "'gateway.settings', 'gateway.app') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
