"""The keys file, the key store's reload, the Authorization header, the limits and the
spend estimate: no app, no sockets."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.access.keys import (
    KeyRecord,
    KeysFileError,
    KeyStore,
    add_key,
    hash_key,
    new_key,
    revoke_key,
)
from gateway.access.quotas import Quotas, SweptMemoryStorage, reset_text
from gateway.access.spend import KeySpend, cost_usd, gpu_seconds
from gateway.errors import RateLimited, Unauthenticated
from gateway.http.auth import MAX_AUTHORIZATION_BYTES, Gate, grant_of, key_from_header
from gateway.ops.cli import main
from gateway.settings import Settings, SettingsError, load_settings


def create(path: Path, name: str, *flags: str, capsys: Any) -> str:
    assert main(["keys", "--file", str(path), "create", name, *flags]) == 0
    return str(capsys.readouterr().out.splitlines()[-1])


def test_create_prints_the_key_alone_on_the_last_line_and_stores_only_its_hash(
    tmp_path: Path, capsys: Any
) -> None:
    path = tmp_path / "keys.json"
    key = create(path, "team-a", "--tiers", "dev,prod", "--rpm", "60", capsys=capsys)
    assert key.startswith("tg-") and len(key) > 40 and " " not in key
    stored = path.read_text()
    assert key not in stored and key[3:] not in stored
    (record,) = json.loads(stored)["keys"]
    assert record["hash"] == hash_key(key)
    assert record["tiers"] == ["dev", "prod"] and record["rpm"] == 60
    assert record["role"] == "client"
    assert os.stat(path).st_mode & 0o077 == 0  # nobody else reads it
    assert KeyStore(path).lookup(key) is not None


def test_list_shows_names_never_keys(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "keys.json"
    key = create(path, "ops", "--tiers", "dev", "--admin", capsys=capsys)
    assert main(["keys", "--file", str(path), "list"]) == 0
    out = capsys.readouterr().out
    assert "ops" in out and "admin" in out and "live" in out
    assert key not in out and hash_key(key) not in out


def test_revoke_unknown_name_fails_with_a_message(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "keys.json"
    assert main(["keys", "--file", str(path), "revoke", "nobody"]) == 1
    assert "no live key named 'nobody'" in capsys.readouterr().err


def test_create_refuses_a_tier_the_config_lacks(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "keys.json"
    assert main(["keys", "--file", str(path), "create", "a", "--tiers", "dev,staging"]) == 2
    assert "no tier named staging; valid: dev, prod" in capsys.readouterr().err
    assert not path.exists()


def test_a_live_name_cannot_be_created_twice(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    add_key(path, KeyRecord(name="a", hash=hash_key(new_key()), tiers=("dev",)))
    with pytest.raises(KeysFileError, match="exists"):
        add_key(path, KeyRecord(name="a", hash=hash_key(new_key()), tiers=("dev",)))


def test_store_reloads_revocation_and_rotation_without_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    old, new = new_key(), new_key()
    add_key(path, KeyRecord(name="team-a", hash=hash_key(old), tiers=("dev",)))
    store = KeyStore(path)
    assert store.lookup(old) is not None
    assert store.refresh() is False  # unchanged: nothing read

    revoke_key(path, "team-a")
    add_key(path, KeyRecord(name="team-a", hash=hash_key(new), tiers=("dev",)))
    assert store.refresh() is True
    assert store.lookup(old) is None
    record = store.lookup(new)
    assert record is not None and record.name == "team-a"


def test_a_broken_file_keeps_the_keys_last_read(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "keys.json"
    key = new_key()
    add_key(path, KeyRecord(name="a", hash=hash_key(key), tiers=("dev",)))
    store = KeyStore(path)
    path.write_text('{"keys": [{"name": "a"')  # an operator's half-saved edit
    assert store.refresh() is False
    assert store.lookup(key) is not None
    assert "keys file not reloaded" in caplog.text


def test_no_file_means_no_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "absent.json")
    assert store.lookup(new_key()) is None and store.names() == []


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "no API key"),
        (b"", "must be `Bearer <key>`"),
        (b"Bearer", "must be `Bearer <key>`"),
        (b"Bearer ", "must be `Bearer <key>`"),
        (b"Basic dXNlcjpwYXNz", "must be `Bearer <key>`"),
        (b"Bearer  tg-abc", "must be `Bearer <key>`"),  # two spaces
        (b"Bearer tg-abc ", "must be `Bearer <key>`"),  # trailing space
        (b"Bearer tg-a\tbc", "must be `Bearer <key>`"),
        (b"Bearer tg-a bc", "must be `Bearer <key>`"),
        (b"Bearer tg-\xc3\xa9", "must be `Bearer <key>`"),
        (b"Bearer " + b"a" * MAX_AUTHORIZATION_BYTES, "over 512 bytes"),
    ],
)
def test_bad_authorization_headers_are_401_without_echoing_them(
    header: bytes | None, says: str
) -> None:
    with pytest.raises(Unauthenticated) as info:
        key_from_header(header)
    assert says in info.value.detail
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")
    sent = (header or b"").decode("latin-1").split()
    if sent and len(sent[-1]) > len("Bearer"):  # what was sent as a key is not in the problem
        assert sent[-1] not in str(info.value.problem())


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert key_from_header(b"bearer tg-abc_DEF-123") == "tg-abc_DEF-123"


def key(**limits: Any) -> KeyRecord:
    return KeyRecord(name="team-a", hash="0" * 64, tiers=("dev",), **limits)


@pytest.fixture(params=["sync", "asyncio"])
def new_quotas(request: pytest.FixtureRequest) -> Any:
    """Quotas on the in-memory store, through the synchronous API (what memory:// uses) and
    the asyncio one (what redis:// uses)."""
    return lambda: Quotas(None, asyncio_api=request.param == "asyncio")


async def test_rpm_refuses_with_retry_after_and_openai_headers(new_quotas: Any) -> None:
    quotas = new_quotas()
    record = key(rpm=2)
    first = dict(await quotas.admit(record))
    assert first[b"x-ratelimit-limit-requests"] == b"2"
    assert first[b"x-ratelimit-remaining-requests"] == b"1"
    await quotas.admit(record)
    with pytest.raises(RateLimited) as info:
        await quotas.admit(record)
    error = info.value
    assert error.status == 429
    assert 1 <= int(error.headers["Retry-After"]) <= 60
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.members["key"] == "team-a"


async def test_tokens_are_charged_after_the_answer_and_refuse_the_next_request(
    new_quotas: Any,
) -> None:
    quotas = new_quotas()
    record = key(tpm=100)
    await quotas.admit(record)
    quotas.charge(record, tokens=150, gpu_s=0.0)  # more than was left: the window fills
    with pytest.raises(RateLimited, match="tokens per minute"):
        await quotas.admit(record)


async def test_gpu_seconds_per_day(new_quotas: Any) -> None:
    quotas = new_quotas()
    record = key(gpu_seconds_per_day=2)
    headers = dict(await quotas.admit(record))
    assert headers[b"x-ratelimit-remaining-gpu-seconds"] == b"2"
    quotas.charge(record, tokens=0, gpu_s=1.5)
    await quotas.admit(record)  # 0.5 s left: served
    quotas.charge(record, tokens=0, gpu_s=0.6)
    with pytest.raises(RateLimited, match="GPU-seconds per day") as info:
        await quotas.admit(record)
    assert int(info.value.headers["Retry-After"]) <= 24 * 3600


async def test_charges_count_here_at_once_and_in_the_store_at_the_flush(
    new_quotas: Any,
) -> None:
    quotas = new_quotas()
    record = key(tpm=1000)
    for _ in range(3):
        quotas.charge(record, tokens=100, gpu_s=0.0)
    headers = dict(await quotas.admit(record))
    assert headers[b"x-ratelimit-remaining-tokens"] == b"700"
    [window] = quotas._windows.values()

    async def in_store() -> int:
        count = quotas.storage.get(window.store_key)
        return int(await count if not quotas.in_memory else count)

    assert await in_store() == 0  # held
    await quotas.flush()
    assert await in_store() == 300  # one incr for the three answers
    quotas.charge(record, tokens=50, gpu_s=0.0)
    await quotas.flush()
    assert await in_store() == 350
    headers = dict(await quotas.admit(record))
    assert headers[b"x-ratelimit-remaining-tokens"] == b"650"
    assert headers[b"x-ratelimit-reset-tokens"] in (b"59s", b"1m0s")


async def test_keys_count_apart(new_quotas: Any) -> None:
    quotas = new_quotas()
    a, b = key(rpm=1), KeyRecord(name="team-b", hash="1" * 64, tiers=("dev",), rpm=1)
    await quotas.admit(a)
    await quotas.admit(b)
    with pytest.raises(RateLimited):
        await quotas.admit(a)


async def test_a_key_without_limits_costs_no_counting(new_quotas: Any) -> None:
    quotas = new_quotas()
    assert await quotas.admit(key()) == []


def test_reset_text_is_openais_format() -> None:
    assert [reset_text(s) for s in (0.2, 1, 59.5, 60, 360, 7380)] == [
        "1s",
        "1s",
        "1m0s",
        "1m0s",
        "6m0s",
        "2h3m0s",
    ]


@pytest.fixture
def real_settings() -> Settings:
    return load_settings(
        environ={
            "GATEWAY_TIER_DEV_URL": "http://dev.test",
            "GATEWAY_TIER_PROD_URL": "http://p.test",
        }
    )


def test_gpu_time_is_latency_over_concurrency_at_the_gpus_price(real_settings: Settings) -> None:
    prod = real_settings.tiers["prod"]
    assert prod.spec is not None and prod.spec.max_concurrency == 16
    gpu_s = gpu_seconds(prod, 3.2)
    assert gpu_s == pytest.approx(0.2)
    assert cost_usd(prod, gpu_s) == pytest.approx(0.2 * 2.50 / 3600)
    dev = real_settings.tiers["dev"]
    assert cost_usd(dev, gpu_seconds(dev, 1.6)) == pytest.approx(0.1 * 1.95 / 3600)


def test_the_embedded_cpu_tier_costs_no_gpu_time() -> None:
    settings = load_settings(environ={})
    dev = settings.tiers["dev"]
    assert dev.kind == "local"
    assert gpu_seconds(dev, 5.0) == 0.0


def test_keys_file_comes_from_the_environment_or_beside_the_config(tmp_path: Path) -> None:
    assert load_settings(environ={}).keys_file is None  # the zero-config run: keys off
    from_env = load_settings(environ={"GATEWAY_KEYS_FILE": "/etc/gateway/keys.json"})
    assert from_env.keys_file == Path("/etc/gateway/keys.json")
    config = tmp_path / "gateway.toml"
    config.write_text('keys_file = "keys.json"\ntiers_file = ""\n[tiers.dev]\n')
    assert load_settings(config, environ={}).keys_file == tmp_path / "keys.json"


def test_limits_store_must_be_a_storage_url() -> None:
    assert load_settings(environ={}).limits_store is None  # memory
    url = "redis://:pw@127.0.0.1:6379/0"
    shared = load_settings(environ={"GATEWAY_LIMITS_STORE": url})
    assert shared.limits_store is not None and shared.limits_store.reveal() == url
    with_state = load_settings(environ={"GATEWAY_STATE": url})  # limits follow the warmth
    assert with_state.limits_store is not None and with_state.limits_store.reveal() == url
    apart = load_settings(environ={"GATEWAY_STATE": url, "GATEWAY_LIMITS_STORE": "memory://"})
    assert apart.limits_store is None
    with pytest.raises(SettingsError, match="GATEWAY_LIMITS_STORE: not memory://") as info:
        load_settings(environ={"GATEWAY_LIMITS_STORE": "sqlite://:secret@x"})
    assert "secret" not in str(info.value)


async def test_the_memory_store_starts_no_thread_per_write_and_sweeps_when_asked() -> None:
    import threading

    quotas = Quotas(None)
    threads = threading.active_count()
    for _ in range(50):
        await quotas.admit(key(rpm=1000, tpm=1000))
    assert threading.active_count() <= threads  # limits' own sweeper re-arms a thread instead
    quotas.storage.incr("past-window", 0)  # a window that has already ended
    assert "past-window" in quotas.storage.storage  # kept until a read or a sweep
    quotas.sweep()
    assert "past-window" not in quotas.storage.storage


async def test_the_memory_store_counts_through_the_librarys_methods_wrapped_once() -> None:
    from limits.storage import MemoryStorage

    # limits wraps a subclass's inherited methods again; the swept store takes them back
    assert SweptMemoryStorage.incr is MemoryStorage.incr
    assert SweptMemoryStorage.get is MemoryStorage.get
    quotas = Quotas(None)
    record = key(rpm=2)
    await quotas.admit(record)
    await quotas.admit(record)
    with pytest.raises(RateLimited):
        await quotas.admit(record)


async def test_a_key_with_new_limits_counts_afresh_and_sweeps_drop_ended_windows() -> None:
    quotas = Quotas(None)
    await quotas.admit(key(rpm=1))
    headers = dict(await quotas.admit(key(rpm=5)))  # the operator raised the limit
    assert headers[b"x-ratelimit-limit-requests"] == b"5"
    assert headers[b"x-ratelimit-remaining-requests"] == b"4"
    assert headers[b"x-ratelimit-reset-requests"] in (b"59s", b"1m0s")
    for window in quotas._windows.values():
        window.ends = 0.0  # as if a minute went by
    quotas.sweep()
    assert quotas._windows == {}


async def test_an_answer_noted_after_the_response_started_is_recorded_once(
    tmp_path: Path,
) -> None:
    secret = new_key()
    path = tmp_path / "keys.json"
    add_key(path, KeyRecord(name="team-a", hash=hash_key(secret), tiers=("prod",), tpm=10**6))
    gate = Gate(load_settings(environ={"GATEWAY_KEYS_FILE": str(path)}))
    registry = CollectorRegistry()
    gate.spend = KeySpend(registry, multiprocess=False)
    gate.quotas = Quotas(None)

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        grant = grant_of(scope)
        assert grant is not None
        grant.answered("prod", 1.6, 100)  # before the answer starts: in its headers
        await send({"type": "http.response.start", "status": 200, "headers": []})
        grant.answered("prod", 3.2, 50)  # a stream's usage, known at its end
        await send({"type": "http.response.body", "body": b"{}"})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", b"Bearer " + secret.encode())],
    }
    await gate.middleware(handler)(scope, None, send)  # type: ignore[arg-type]
    headers = dict(sent[0]["headers"])
    prod = gate.settings.tiers["prod"]
    assert headers[b"x-gpu-seconds"] == b"%.6f" % gpu_seconds(prod, 1.6)  # the first answer's
    labels = {"key": "team-a", "tier": "prod"}
    assert registry.get_sample_value("gateway_key_requests_total", labels) == 2
    assert registry.get_sample_value("gateway_key_tokens_total", labels) == 150
    assert gate.quotas._windows  # both answers' tokens are in the key's window
    window = next(
        w for (_, kind, _), w in gate.quotas._windows.items() if kind.label.startswith("tokens")
    )
    assert window.count == 150


def test_the_redactor_removes_anything_shaped_as_a_client_key() -> None:
    from gateway.redact import REDACTED, Redactor

    key = new_key()
    said = f"tier says: bad header Authorization: Bearer {key}; also {key}."
    clean = Redactor().text(said)
    assert key not in clean and clean.count(REDACTED) == 2
    assert Redactor().text("tg-short and tg-") == "tg-short and tg-"  # only a key's shape


def record(name: str, key: str, *, revoked: bool = False) -> KeyRecord:
    return KeyRecord(name=name, hash=hash_key(key), tiers=("dev",), revoked=revoked)


def test_file_and_shared_keys_are_a_union(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    in_file, shared = new_key(), new_key()
    add_key(path, record("from-file", in_file))
    store = KeyStore(path)
    store.use_shared([record("from-store", shared)])
    assert store.names() == ["from-file", "from-store"]
    assert store.lookup(in_file) is not None and store.lookup(shared) is not None
    store.use_shared([])  # the shared half is replaced whole, the file's stays
    assert store.lookup(shared) is None and store.lookup(in_file) is not None


def test_a_revocation_in_either_place_wins(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    copied, other = new_key(), new_key()
    add_key(path, record("copied", copied))
    add_key(path, record("other", other))
    store = KeyStore(path)
    store.use_shared([record("copied", copied, revoked=True)])  # revoked in the store only
    assert store.lookup(copied) is None and store.lookup(other) is not None

    store.use_shared([record("other", other)])  # live in the store, revoked in the file
    revoke_key(path, "other")
    store.use_shared([record("other", other), record("copied", copied)])
    assert store.refresh() is True
    assert store.lookup(other) is None and store.lookup(copied) is not None


def test_a_store_without_a_file_holds_the_shared_keys_only() -> None:
    store = KeyStore(None)
    key = new_key()
    assert store.refresh() is False and store.lookup(key) is None
    store.use_shared([record("a", key)])
    assert store.lookup(key) is not None


@pytest.mark.parametrize(
    ("env", "on", "url"),
    [
        ({}, False, None),
        ({"GATEWAY_KEYS_FILE": "/k.json"}, True, None),
        (
            {"GATEWAY_STATE": "redis://r:6379/0", "GATEWAY_KEYS_STORE": "state"},
            True,
            "redis://r:6379/0",
        ),
        ({"GATEWAY_KEYS_STORE": "redis://:hunter2@k:6379/2"}, True, "redis://:hunter2@k:6379/2"),
        ({"GATEWAY_STATE": "redis://r:6379/0"}, False, None),  # shared warmth alone: keys off
    ],
)
def test_keys_store_setting(env: dict[str, str], on: bool, url: str | None) -> None:
    settings = load_settings(environ=env)
    assert settings.keys_on is on
    assert (settings.keys_store.reveal() if settings.keys_store else None) == url
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("state", "no state (GATEWAY_STATE) Redis"),
        ("http://:hunter2@k/0", "not 'state' or a redis://"),
    ],
)
def test_a_bad_keys_store_is_refused_without_echoing_it(value: str, says: str) -> None:
    with pytest.raises(SettingsError, match="GATEWAY_KEYS_STORE") as caught:
        load_settings(environ={"GATEWAY_KEYS_STORE": value})
    assert says in str(caught.value) and "hunter2" not in str(caught.value)
