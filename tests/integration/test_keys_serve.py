"""API keys with `gateway serve` as a real process: refusing an open non-loopback address,
and keys and limits under `--workers 2` with the in-memory limits store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.access.keys import KeyRecord, add_key, hash_key, new_key
from gateway.ops.cli import _loopback, main
from tests.integration.gateway_process import gateway_process, stop_group
from tests.redis_server import RedisServer


def test_serving_a_public_address_without_keys_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve 0.0.0.0 without API keys" in err and "--no-auth" in err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("gateway.internal", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert _loopback(host) is loopback


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GATEWAY_API_KEY"}


def test_workers_check_keys_and_count_limits_per_worker(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = new_key()
    add_key(path, KeyRecord(name="team-a", hash=hash_key(key), tiers=("prod",), rpm=3))
    admin = new_key()
    add_key(path, KeyRecord(name="ops", hash=hash_key(admin), tiers=("prod",), role="admin"))
    env = {"GATEWAY_KEYS_FILE": str(path)}
    with gateway_process(env, "--workers", "2") as (proc, url):
        status = [sys.executable, "-m", "gateway.ops.cli", "status", "--url", url]
        keyless = subprocess.run(status, capture_output=True, text=True, env=clean_env())
        assert keyless.returncode != 0 and "401" in keyless.stderr
        keyed = subprocess.run(
            status, capture_output=True, text=True, env={**clean_env(), "GATEWAY_API_KEY": admin}
        )
        assert keyed.returncode == 0 and "prod" in keyed.stdout, keyed.stderr
        # New connections land on either worker: every one checks keys.
        fresh = {"connection": "close"}
        assert {httpx.get(url + "/v1/models", headers=fresh).status_code for _ in range(6)} == {401}
        auth = {**fresh, "Authorization": f"Bearer {key}"}
        codes = [httpx.get(url + "/v1/models", headers=auth).status_code for _ in range(10)]
        # In memory each worker counts on its own: between 3 and 2 x 3 requests pass.
        assert 3 <= codes.count(200) <= 6 and codes.count(429) >= 4, codes
        stop_group(proc)
        assert proc.stdout is not None
        output = proc.stdout.read()
    assert "per-key limits are counted per worker" in output


def test_keys_cli_runs_as_a_command(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.ops.cli",
            "keys",
            "--file",
            str(tmp_path / "k.json"),
            "create",
            "ci",
            "--tiers",
            "dev",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines()[-1].startswith("tg-")


def test_workers_on_redis_share_one_limit(tmp_path: Path, redis_server: RedisServer) -> None:
    path = tmp_path / "keys.json"
    key = new_key()
    add_key(path, KeyRecord(name="team-a", hash=hash_key(key), tiers=("prod",), rpm=3))
    env = {"GATEWAY_KEYS_FILE": str(path), "GATEWAY_STATE": redis_server.url}
    with gateway_process(env, "--workers", "2") as (_, url):
        auth = {"connection": "close", "Authorization": f"Bearer {key}"}
        codes = [httpx.get(url + "/v1/models", headers=auth).status_code for _ in range(8)]
    assert codes.count(200) == 3 and codes.count(429) == 5, codes  # one count for both
