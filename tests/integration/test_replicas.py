"""Three `gateway serve` processes, as on three machines, sharing one real Redis, in front of
stand-in tiers that cold-start like Modal endpoints (bench/cold_tier.py, processes of their
own). One warm-up serves everyone, everyone sees it, everyone learns the same ETA, one key's
rate limit is counted once across the three, and a replica killed with SIGKILL mid-warm-up
leaves nothing stuck.

Leases are shrunk through config (``warmup_lease_s = 3``) so a takeover costs seconds. Keys
are on (``GATEWAY_KEYS_FILE``, made with ``gateway keys create``): the tests speak with an
admin key without limits, and the rate-limit proof with a client key of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import gateway
from gateway.ops.cli import main
from gateway.ops.serving import free_port
from tests.conftest import PERSON_SCHEMA
from tests.integration.gateway_process import gateway_processes, stop_group
from tests.redis_server import RedisServer

REPO = Path(gateway.__file__).resolve().parent.parent
STARTUP_S = 60.0  # three cold interpreters at once on a loaded 2-core machine
COLD_S = 6.0  # > already_warm_below_s (5 s): the warm-up counts as a measured cold start
LEASE_S = 3.0  # a killed replica's warm-up is taken over within this
RPM = 7  # the limited key's requests per minute: a few, so 3 x RPM requests take a second

CONFIG = """
default_tier = "prod"
tiers_file = "{tiers}"
state_prefix = "replica-test"
warmup_lease_s = {lease}           # the test's: a takeover within seconds

[tiers.dev]
kind = "modal"
fallback_mode = "wait"
[tiers.dev.timeouts]
cold = 60.0

[tiers.prod]
kind = "modal"
fallback_mode = "wait"
[tiers.prod.timeouts]
cold = 60.0
"""


@dataclass
class Cluster:
    redis: RedisServer
    replicas: list[tuple[subprocess.Popen[str], str]]
    tiers: dict[str, str]  # name -> stand-in URL
    logs: list[Path]  # each replica's output, shown when a test fails
    admin: dict[str, str]  # the Authorization header of an admin key without limits
    limited: dict[str, str]  # ... of a client key limited to RPM requests a minute

    def url(self, i: int) -> str:
        return self.replicas[i][1]

    def get(self, i: int, path: str) -> httpx.Response:
        return httpx.get(self.url(i) + path, headers=self.admin, timeout=5.0)

    def status(self, i: int) -> dict[str, Any]:
        return self.get(i, "/status").json()  # type: ignore[no-any-return]

    def warmups_started(self, i: int, tier: str) -> float:
        text = self.get(i, "/metrics").text
        found = re.search(rf'^gateway_warmups_started_total{{tier="{tier}"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs)


def stats(tier_url: str) -> dict[str, Any]:
    return httpx.get(tier_url + "/stats", timeout=5.0).json()  # type: ignore[no-any-return]


def wait_for(check: Any, what: str, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        time.sleep(0.1)


def start_stand_in(port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "bench" / "cold_tier.py"),
            "--port",
            str(port),
            "--cold-s",
            str(COLD_S),
        ],
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def create_key(config: Path, keys: Path, name: str, *options: str) -> dict[str, str]:
    """``gateway keys create``, as an operator runs it; the Authorization header of its key."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        argv = ["keys", "--config", str(config), "--file", str(keys), "create", name]
        assert main([*argv, "--tiers", "dev,prod", *options]) == 0
    return {"Authorization": f"Bearer {printed.getvalue().splitlines()[-1]}"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("replicas")
    config, keys = folder / "gateway.toml", folder / "keys.json"
    config.write_text(CONFIG.format(tiers=REPO / "config" / "tiers.toml", lease=LEASE_S))
    admin = create_key(config, keys, "operator", "--admin")
    limited = create_key(config, keys, "team-a", "--rpm", str(RPM))
    stand_ins: list[subprocess.Popen[str]] = []
    redis = RedisServer().start()
    try:
        tiers = {}
        for name in ("dev", "prod"):
            port = free_port()
            stand_ins.append(start_stand_in(port))
            tiers[name] = f"http://127.0.0.1:{port}"
        env = {
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_KEYS_FILE": str(keys),
            "GATEWAY_STATE": redis.url,
            "GATEWAY_TIER_DEV_URL": tiers["dev"],
            "GATEWAY_TIER_PROD_URL": tiers["prod"],
        }
        logs = [folder / f"replica-{i}.log" for i in range(3)]
        with gateway_processes(3, env, startup_s=STARTUP_S, logs=logs) as replicas:
            for url in tiers.values():
                wait_for(lambda url=url: _answers(url + "/stats"), f"{url} up", STARTUP_S)
            yield Cluster(redis, replicas, tiers, logs, admin, limited)
    finally:
        for proc in stand_ins:
            stop_group(proc)
        redis.stop()


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url, timeout=1.0).status_code == 200
    return False


async def _generate_all(urls: list[str], tier: str, auth: dict[str, str]) -> list[int | str]:
    """Each answer's status; a failure as its status and body, so a red run says why."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=90.0, limits=limits) as client:

        async def one(url: str) -> int | str:
            response = await client.post(
                url + "/generate",
                json={"prompt": "p", "schema": PERSON_SCHEMA},
                headers={"X-Model-Tier": tier, **auth},
            )
            if response.status_code == 200:
                return 200
            return f"{response.status_code} {response.text[:300]}"

        return await asyncio.gather(*(one(url) for url in urls))


def test_300_requests_over_three_replicas_cause_one_warm_up(cluster: Cluster) -> None:
    tier = cluster.tiers["prod"]
    assert stats(tier)["health_calls"] == 0
    assert all(cluster.status(i)["prod"]["state"] == "cold" for i in range(3))

    # A warm-up started through one replica is seen by the others.
    started = httpx.post(
        cluster.url(0) + "/warmup", json={"tier": "prod"}, headers=cluster.admin, timeout=5.0
    )
    assert started.status_code == 202, started.text
    for i in (1, 2):
        wait_for(lambda i=i: cluster.status(i)["prod"]["state"] == "warming", "warming")

    urls = [cluster.url(i % 3) for i in range(300)]
    codes = asyncio.run(_generate_all(urls, "prod", cluster.admin))
    assert [c for c in codes if c != 200] == [], cluster.output()

    seen = stats(tier)
    assert seen["health_calls"] == 1  # exactly one warm-up request reached the tier
    assert seen["completions"] == 300
    assert sum(cluster.warmups_started(i, "prod") for i in range(3)) == 1
    rows = [cluster.status(i)["prod"] for i in range(3)]
    assert {row["state"] for row in rows} == {"warm"}
    assert {row["warmups"] for row in rows} == {1}
    assert {row["store"]["status"] for row in rows} == {"ok"}
    means = {row["mean_cold_start_s"] for row in rows}
    assert len(means) == 1 and means != {424.0}  # learned once, the same everywhere


def test_a_rate_limit_holds_across_the_three_replicas(cluster: Cluster) -> None:
    # One at a time, round robin: each replica sees a third of the key's requests, and only
    # a count kept in Redis stops the key at RPM (each replica alone would admit RPM).
    codes = [
        httpx.get(
            cluster.url(i % 3) + "/v1/models",
            headers={**cluster.limited, "connection": "close"},
            timeout=5.0,
        ).status_code
        for i in range(3 * RPM)
    ]
    assert codes[:RPM] == [200] * RPM, codes
    assert codes[RPM:] == [429] * (2 * RPM), codes
    # Every replica refused some: the count each saw was the shared one.
    assert {codes[i] for i in range(RPM, 3 * RPM) if i % 3 == 0} == {429}
    assert {codes[i] for i in range(RPM, 3 * RPM) if i % 3 == 1} == {429}
    assert {codes[i] for i in range(RPM, 3 * RPM) if i % 3 == 2} == {429}


def test_a_replica_killed_mid_warm_up_is_taken_over(cluster: Cluster) -> None:
    tier = cluster.tiers["dev"]
    victim = cluster.replicas[2][0]
    httpx.post(cluster.url(2) + "/warmup", json={"tier": "dev"}, headers=cluster.admin, timeout=5.0)
    wait_for(lambda: stats(tier)["health_calls"] == 1, "the victim's warm-up probe")
    for i in (0, 1):
        wait_for(lambda i=i: cluster.status(i)["dev"]["state"] == "warming", "warming")

    os.killpg(victim.pid, signal.SIGKILL)  # no release, no goodbye: only the lease expiry
    victim.wait()
    survivors = [cluster.url(0), cluster.url(1)]
    codes = asyncio.run(_generate_all(survivors * 10, "dev", cluster.admin))

    assert [c for c in codes if c != 200] == [], cluster.output()
    # The victim's probe died with it; one survivor took the warm-up over after the lease.
    assert stats(tier)["health_calls"] == 2
    assert stats(tier)["completions"] == 20
    assert sum(cluster.warmups_started(i, "dev") for i in (0, 1)) == 1
    rows = [cluster.status(i)["dev"] for i in (0, 1)]
    assert {row["state"] for row in rows} == {"warm"}
    assert len({row["mean_cold_start_s"] for row in rows}) == 1
