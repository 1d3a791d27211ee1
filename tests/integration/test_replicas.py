"""Three `gateway serve` processes, as on three machines, sharing one real Redis, in front of
stand-in tiers that cold-start like Modal endpoints (bench/cold_tier.py, processes of their
own). One warm-up serves everyone, everyone sees it, everyone learns the same ETA, and a
replica killed with SIGKILL mid-warm-up leaves nothing stuck.

Leases are shrunk through config (``warmup_lease_s = 3``) so a takeover costs seconds.
Rate limits across replicas belong to the keys work: its test goes here once it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from gateway.ops.serving import free_port
from tests.conftest import PERSON_SCHEMA
from tests.integration.gateway_process import stop_group
from tests.redis_server import RedisServer

# Deselected by default (pyproject.toml): run with `scripts/test -m replicas tests/integration/
# test_replicas.py`. After the rest of the integration suite, the first test has failed with
# every request answered 504 ("not warm within 60 s", ETA 363 s): the shared warm-up never
# reached warm; alone it passes. Until that is understood it must not gate CI (issue 17).
pytestmark = pytest.mark.replicas

REPO = Path(gateway.__file__).resolve().parent.parent
STARTUP_S = 60.0  # three cold interpreters at once on a loaded 2-core machine
COLD_S = 6.0  # > already_warm_below_s (5 s): the warm-up counts as a measured cold start
LEASE_S = 3.0  # a killed replica's warm-up is taken over within this

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

    def url(self, i: int) -> str:
        return self.replicas[i][1]


def stats(tier_url: str) -> dict[str, Any]:
    return httpx.get(tier_url + "/stats", timeout=5.0).json()  # type: ignore[no-any-return]


def status(url: str) -> dict[str, Any]:
    return httpx.get(url + "/status", timeout=5.0).json()  # type: ignore[no-any-return]


def warmups_started(url: str, tier: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5.0).text
    found = re.search(rf'^gateway_warmups_started_total{{tier="{tier}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    config = tmp_path_factory.mktemp("replicas") / "gateway.toml"
    config.write_text(CONFIG.format(tiers=REPO / "config" / "tiers.toml", lease=LEASE_S))
    procs: list[subprocess.Popen[str]] = []
    redis = RedisServer().start()
    try:
        tiers = {}
        for name in ("dev", "prod"):
            port = free_port()
            procs.append(start_stand_in(port))
            tiers[name] = f"http://127.0.0.1:{port}"
        # Only what the replicas need: a GATEWAY_* or PROMETHEUS_* left in this process's
        # environment by anything before must not reach them.
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))
        }
        env = {
            **inherited,
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_STATE": redis.url,
            "GATEWAY_LOCAL_TIER": "off",
            "GATEWAY_TIER_DEV_URL": tiers["dev"],
            "GATEWAY_TIER_PROD_URL": tiers["prod"],
        }
        replicas = []
        for _ in range(3):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.ops.cli", "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
            procs.append(proc)
            replicas.append((proc, f"http://127.0.0.1:{port}"))
        for _, url in replicas:
            wait_for(lambda url=url: _answers(url + "/health"), f"{url} up", STARTUP_S)
        for url in tiers.values():
            wait_for(lambda url=url: _answers(url + "/stats"), f"{url} up", STARTUP_S)
        yield Cluster(redis, replicas, tiers)
    finally:
        for proc in procs:
            stop_group(proc)
        redis.stop()


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url, timeout=1.0).status_code == 200
    return False


async def _generate_all(urls: list[str], tier: str) -> list[int | str]:
    """Each answer's status; a failure as its status and body, so a red run says why."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=90.0, limits=limits) as client:

        async def one(url: str) -> int:
            response = await client.post(
                url + "/generate",
                json={"prompt": "p", "schema": PERSON_SCHEMA},
                headers={"X-Model-Tier": tier},
            )
            if response.status_code == 200:
                return 200
            return f"{response.status_code} {response.text[:300]}"

        return await asyncio.gather(*(one(url) for url in urls))


def test_300_requests_over_three_replicas_cause_one_warm_up(cluster: Cluster) -> None:
    tier = cluster.tiers["prod"]
    assert stats(tier)["health_calls"] == 0
    assert all(status(cluster.url(i))["prod"]["state"] == "cold" for i in range(3))

    # A warm-up started through one replica is seen by the others.
    httpx.post(cluster.url(0) + "/warmup", json={"tier": "prod"}, timeout=5.0)
    for i in (1, 2):
        wait_for(lambda i=i: status(cluster.url(i))["prod"]["state"] == "warming", "warming")

    urls = [cluster.url(i % 3) for i in range(300)]
    codes = asyncio.run(_generate_all(urls, "prod"))
    assert [c for c in codes if c != 200] == []

    seen = stats(tier)
    assert seen["health_calls"] == 1  # exactly one warm-up request reached the tier
    assert seen["completions"] == 300
    assert sum(warmups_started(cluster.url(i), "prod") for i in range(3)) == 1
    rows = [status(cluster.url(i))["prod"] for i in range(3)]
    assert {row["state"] for row in rows} == {"warm"}
    assert {row["warmups"] for row in rows} == {1}
    assert {row["store"]["status"] for row in rows} == {"ok"}
    means = {row["mean_cold_start_s"] for row in rows}
    assert len(means) == 1 and means != {424.0}  # learned once, the same everywhere


def test_a_replica_killed_mid_warm_up_is_taken_over(cluster: Cluster) -> None:
    tier = cluster.tiers["dev"]
    victim, survivors = cluster.replicas[2], [cluster.url(0), cluster.url(1)]
    httpx.post(cluster.url(2) + "/warmup", json={"tier": "dev"}, timeout=5.0)
    wait_for(lambda: stats(tier)["health_calls"] == 1, "the victim's warm-up probe")
    for url in survivors:
        wait_for(lambda url=url: status(url)["dev"]["state"] == "warming", "warming")

    os.killpg(victim[0].pid, signal.SIGKILL)  # no release, no goodbye: only the lease expiry
    victim[0].wait()
    codes = asyncio.run(_generate_all(survivors * 10, "dev"))

    assert [c for c in codes if c != 200] == []
    # The victim's probe died with it; one survivor took the warm-up over after the lease.
    assert stats(tier)["health_calls"] == 2
    assert sum(warmups_started(url, "dev") for url in survivors) == 1
    rows = [status(url)["dev"] for url in survivors]
    assert {row["state"] for row in rows} == {"warm"}
    assert len({row["mean_cold_start_s"] for row in rows}) == 1
