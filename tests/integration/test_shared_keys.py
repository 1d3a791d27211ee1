"""API keys in Redis, against a real redis-server: ``gateway keys`` writes there, two
``gateway serve`` processes follow it without a restart, an outage keeps the keys last read,
and no key is ever stored, logged or shown."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from redis import Redis

from gateway.access.keys import KeyRecord, KeysFileError, KeyStore, hash_key, new_key
from gateway.access.shared_keys import KeyFollower, SharedKeys
from gateway.ops.cli import main
from tests.integration.gateway_process import gateway_process, stop_group
from tests.redis_server import RedisServer

FOLLOW_DEADLINE_S = 10.0  # a change shows within FOLLOW_EVERY_S (0.5 s); 10 s means it did not


@pytest.fixture
async def shared(redis_server: RedisServer) -> AsyncIterator[SharedKeys]:
    # 1 s: a loaded CI machine must not turn a working Redis into a timeout (0.2 s did once);
    # the outage test's frozen Redis costs one such second per failed sync.
    store = SharedKeys(redis_server.url, prefix="team-a", timeout_s=1.0)
    yield store
    await store.aclose()


def record(name: str, key: str, **extra: Any) -> KeyRecord:
    return KeyRecord(name=name, hash=hash_key(key), tiers=("dev",), **extra)


def everything_in(redis_server: RedisServer) -> str:
    """Every key and value in the Redis, as text (the tests' Redis holds only this test's)."""
    with Redis.from_url(redis_server.url) as client:
        parts = []
        for name in client.keys("*"):
            kind = client.type(name)
            value = client.hgetall(name) if kind == b"hash" else client.get(name)
            parts.append(f"{name!r} {value!r}")
        return "\n".join(parts)


async def test_add_revoke_and_a_follower_that_sees_both(
    shared: SharedKeys, redis_server: RedisServer
) -> None:
    keys = KeyStore(None)
    follower = KeyFollower(shared, keys)
    assert await follower.sync() is True and keys.names() == []  # an empty store is read
    key = new_key()
    await shared.add(record("ci", key, rpm=60))
    with pytest.raises(KeysFileError, match="exists"):
        await shared.add(record("ci", new_key()))
    assert await follower.sync() is True
    found = keys.lookup(key)
    assert found is not None and found.name == "ci" and found.rpm == 60
    assert await follower.sync() is False  # unchanged: one GET, nothing re-read

    await shared.revoke("ci")
    with pytest.raises(KeysFileError, match="no live key named 'ci'"):
        await shared.revoke("ci")
    assert await follower.sync() is True and keys.lookup(key) is None
    # Rotation: the name is free again; the old key stays revoked (listed as such).
    rotated = new_key()
    await shared.add(record("ci", rotated))
    assert await follower.sync() is True and keys.lookup(rotated) is not None
    assert sorted(k.revoked for k in await shared.records()) == [False, True]
    stored = everything_in(redis_server)
    assert hash_key(key) in stored and key not in stored and rotated not in stored
    assert "team-a:keys" in stored  # under the deployment's prefix


async def test_an_outage_keeps_the_keys_last_read_and_rejoins(
    shared: SharedKeys, redis_server: RedisServer, caplog: Any
) -> None:
    keys = KeyStore(None)
    follower = KeyFollower(shared, keys)
    key = new_key()
    await shared.add(record("ci", key))
    assert await follower.sync() is True

    redis_server.pause()  # frozen: connections open, no answers
    try:
        assert await follower.sync() is False
        assert await follower.sync() is False
        assert keys.lookup(key) is not None and follower.ok is False and follower.errors == 2
        assert follower.health() == {"backend": "redis", "status": "degraded", "failed_syncs": 2}
    finally:
        redis_server.resume()
    assert "key store: Redis unavailable (TimeoutError); the keys last read stay" in caplog.text

    await shared.revoke("ci")
    assert await follower.sync() is True and follower.ok is True
    assert keys.lookup(key) is None
    assert follower.health()["status"] == "ok"
    assert "key store: Redis is back" in caplog.text

    redis_server.stop()  # down: connection refused, the keys last read stay again
    assert await follower.sync() is False and follower.ok is False
    redis_server.start()  # the tests' Redis keeps nothing on disk: it comes back empty
    fresh = new_key()
    await shared.add(record("ci", fresh))
    # A fresh Redis's first change is a version this follower has never seen.
    assert await follower.sync() is True and keys.lookup(fresh) is not None


def test_the_cli_writes_to_the_store_and_merges_with_the_file(
    redis_server: RedisServer, tmp_path: Path, capsys: Any
) -> None:
    path = tmp_path / "keys.json"
    both = ["keys", "--file", str(path), "--store", redis_server.url]
    assert main(["keys", "--file", str(path), "create", "in-file", "--tiers", "dev"]) == 0
    assert main([*both, "create", "in-file", "--tiers", "dev"]) == 1
    assert "a key named 'in-file' exists in " + str(path) in capsys.readouterr().err

    assert main([*both, "create", "ci", "--tiers", "dev,prod", "--admin"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[-1]
    assert key.startswith("tg-") and "the shared key store (Redis, prefix 'tier-gateway')" in out[0]
    assert key not in path.read_text() and key not in everything_in(redis_server)

    assert main([*both, "list"]) == 0
    listing = capsys.readouterr().out
    assert [line.split()[-2:] for line in listing.splitlines()[1:]] == [
        ["live", "file"],
        ["live", "store"],
    ]
    assert key not in listing and hash_key(key) not in listing

    assert main([*both, "revoke", "in-file"]) == 0
    assert f"revoked in {path}" in capsys.readouterr().out
    assert main(["keys", "--store", redis_server.url, "revoke", "ci"]) == 0
    assert main([*both, "revoke", "ci"]) == 1
    assert "no live key named 'ci' in" in capsys.readouterr().err


def test_the_cli_names_a_store_that_does_not_answer_without_its_url(capsys: Any) -> None:
    url = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1
    assert main(["keys", "--store", url, "list"]) == 1
    err = capsys.readouterr().err
    assert "the key store did not answer (ConnectionError)" in err and "hunter2" not in err


def keys_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``gateway keys`` as an operator runs it: a separate process, configured by ``env``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.ops.cli", "keys", *args],
        capture_output=True,
        text=True,
        env={**inherited, **env},
        check=False,
    )


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def refused(url: str, key: str) -> bool:
    try:
        sdk(url, key).models.list()
    except openai.AuthenticationError:  # 401
        return True
    return False


def test_two_gateways_follow_one_revocation_and_an_outage_without_a_restart(
    redis_server: RedisServer,
) -> None:
    env = {"GATEWAY_STATE": redis_server.url, "GATEWAY_KEYS_STORE": "state"}
    made = keys_cli(env, "create", "team-a", "--tiers", "dev")
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[-1]
    with gateway_process(env) as (one, url_one), gateway_process(env) as (two, url_two):
        urls = (url_one, url_two)
        for url in urls:
            assert [m.id for m in sdk(url, key).models.list()], url
            assert refused(url, new_key())

        assert keys_cli(env, "revoke", "team-a").returncode == 0
        deadline = time.monotonic() + FOLLOW_DEADLINE_S
        while not all(refused(url, key) for url in urls):
            assert time.monotonic() < deadline, "a gateway still takes the revoked key"
            time.sleep(0.1)

        # Redis frozen: both go on taking the keys they last read, refusing the rest.
        second = keys_cli(env, "create", "team-b", "--tiers", "dev").stdout.splitlines()[-1]
        deadline = time.monotonic() + FOLLOW_DEADLINE_S
        while any(refused(url, second) for url in urls):
            assert time.monotonic() < deadline, "a gateway never took the new key"
            time.sleep(0.1)
        redis_server.pause()
        try:
            time.sleep(1.5)  # three follow intervals: each one fails, the keys stay
            for url in urls:
                assert [m.id for m in sdk(url, second).models.list()]
                assert refused(url, key)
                ready = httpx.get(url + "/ready", headers={"Authorization": f"Bearer {second}"})
                assert ready.json()["key_store"]["status"] == "degraded", ready.text
        finally:
            redis_server.resume()
        # Back: the next change reaches both again.
        assert keys_cli(env, "revoke", "team-b").returncode == 0
        deadline = time.monotonic() + FOLLOW_DEADLINE_S
        while not all(refused(url, second) for url in urls):
            assert time.monotonic() < deadline, "a gateway did not rejoin the key store"
            time.sleep(0.1)
        outputs = []
        for proc in (one, two):
            stop_group(proc)
            assert proc.stdout is not None
            outputs.append(proc.stdout.read())
    for output in outputs:
        assert "key store: Redis unavailable" in output and "Redis is back" in output
        assert key not in output and second not in output  # names only, never a key
    stored = everything_in(redis_server)
    assert key not in stored and second not in stored


def test_no_client_key_in_any_output_with_keys_in_redis(
    redis_server: RedisServer, make_client: Any, make_settings: Any, router: Any, caplog: Any
) -> None:
    """The sentinel search of tests/integration/test_keys.py, with every key in Redis."""
    from tests.integration.test_keys import Session, logged

    class StoreKeys:
        def __init__(self) -> None:
            self.admin = self.add("ops", "dev,prod", "--admin")
            self.dev_only = self.add("team-dev", "dev")
            self.both = self.add("team-both", "dev,prod")

        def add(self, name: str, tiers: str, *flags: str) -> str:
            made = keys_cli(
                {}, "--store", redis_server.url, "create", name, "--tiers", tiers, *flags
            )
            assert made.returncode == 0, made.stderr
            return made.stdout.splitlines()[-1]

    caplog.set_level(logging.DEBUG)
    keys = StoreKeys()
    client = make_client(make_settings(GATEWAY_KEYS_STORE=redis_server.url))
    session = Session(client, keys, router)  # type: ignore[arg-type]  # the same three keys
    text = session.responses + logged(caplog) + everything_in(redis_server)
    for sentinel in (keys.admin, keys.dev_only, keys.both, session.unknown):
        assert sentinel not in text
        assert sentinel not in session.tier_saw
    keyed_lines = [r for r in caplog.records if getattr(r, "key", None) is not None]
    assert {"team-both", "team-dev", "ops", "unknown"} <= {r.key for r in keyed_lines}
