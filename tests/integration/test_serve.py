"""`gateway serve` as a real process: it prints where it listens, serves, and on SIGTERM
drains in-flight requests before exiting 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from gateway.ops.serving import free_port
from tests.conftest import PERSON_SCHEMA
from tests.integration.gateway_process import gateway_process
from tests.integration.openai_standin import standin_tier


def test_serve_prints_where_it_listens_and_what_tiers_point_at() -> None:
    with standin_tier() as upstream:
        dev_url = f"http://127.0.0.1:{upstream.server_address[1]}"
        env = {"GATEWAY_TIER_DEV_URL": dev_url, "GATEWAY_TIER_DEV_KIND": "openai"}
        with gateway_process(env) as (proc, url):
            response = httpx.post(url + "/generate", json={"prompt": "p", "schema": PERSON_SCHEMA})
            assert response.status_code == 200
            assert response.json()["output"] == {"name": "Ada", "age": 36}
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
    assert f"listening on {url}" in output
    assert f"dev (default): openai -> {dev_url}" in output
    assert "prod: modal -> not configured (set GATEWAY_TIER_PROD_URL)" in output


def test_sigterm_drains_in_flight_requests_then_exits_0() -> None:
    with standin_tier(answer_delay_s=1.5) as upstream:
        env = {
            "GATEWAY_TIER_DEV_URL": f"http://127.0.0.1:{upstream.server_address[1]}",
            "GATEWAY_TIER_DEV_KIND": "openai",
        }
        with gateway_process(env) as (proc, url):
            result: dict[str, Any] = {}

            def call() -> None:
                result["response"] = httpx.post(
                    url + "/generate", json={"prompt": "p", "schema": PERSON_SCHEMA}, timeout=30
                )

            caller = threading.Thread(target=call)
            caller.start()
            upstream.wait_seen(1)  # the request is in flight at the tier
            proc.send_signal(signal.SIGTERM)
            caller.join(timeout=30)
            assert proc.wait(timeout=30) == 0
    assert result["response"].status_code == 200
    assert result["response"].json()["output"] == {"name": "Ada", "age": 36}


def test_bad_configuration_stops_startup_naming_the_key() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.ops.cli", "serve", "--port", str(free_port())],
        env={**os.environ, "GATEWAY_TIER_PROD_URL": "not-a-url"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "GATEWAY_TIER_PROD_URL" in proc.stderr
    assert "Traceback" not in proc.stderr


def _warmup_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.ops.cli", "warmup", "--url", url, "--tier", "prod", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_warmup_wait_shows_progress_and_exits_0_once_warm() -> None:
    # prod as a scale-to-zero Modal tier: presumed cold, so only the warm-up probes it.
    with standin_tier(health=[503, 503, 200]) as prod:
        env = {"GATEWAY_TIER_PROD_URL": f"http://127.0.0.1:{prod.server_address[1]}"}
        with gateway_process(env) as (_, url):
            assert httpx.get(url + "/status").json()["prod"]["state"] == "cold"
            done = _warmup_cli(url, "--wait")
            assert done.returncode == 0, done.stderr
            assert "prod: warm after" in done.stdout
            assert "[" in done.stderr  # the progress bar against the ETA
            assert httpx.get(url + "/status").json()["prod"]["state"] == "warm"
            shown = subprocess.run(
                [sys.executable, "-m", "gateway.ops.cli", "status", "--url", url],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert shown.returncode == 0
            prod_line = next(line for line in shown.stdout.splitlines() if line.startswith("prod"))
            assert prod_line.split()[1] == "warm"


def test_warmup_wait_exits_non_zero_at_its_deadline() -> None:
    with standin_tier(health=[503]) as prod:
        env = {"GATEWAY_TIER_PROD_URL": f"http://127.0.0.1:{prod.server_address[1]}"}
        with gateway_process(env) as (_, url):
            done = _warmup_cli(url, "--wait", "--timeout", "3")
            assert done.returncode == 1
            assert "not warm by its deadline" in done.stderr


def test_workers_share_one_truth_about_warmth() -> None:
    """Two workers: a warm-up through one is seen by the other, and runs once."""
    # Booting for three probes (1 + 2 + 4 s of backoff): time for triggers on both workers.
    with standin_tier(health=[503, 503, 503, 200]) as prod:
        env = {"GATEWAY_TIER_PROD_URL": f"http://127.0.0.1:{prod.server_address[1]}"}
        with gateway_process(env, "--workers", "2") as (_, url):

            def trigger(_: int) -> int:
                return httpx.post(
                    url + "/warmup", json={"tier": "prod"}, headers={"connection": "close"}
                ).status_code

            with ThreadPoolExecutor(max_workers=8) as pool:
                assert set(pool.map(trigger, range(8))) == {202}
            done = _warmup_cli(url, "--wait", "--timeout", "60")
            assert done.returncode == 0, done.stderr
            # New connections land on either worker; every one must say warm.
            states = {
                httpx.get(url + "/status", headers={"connection": "close"}).json()["prod"]["state"]
                for _ in range(12)
            }
            assert states == {"warm"}
            assert prod.health_calls == 4  # one warm-up (503, 503, 503, 200) for both workers


def test_the_serve_supervisor_imports_no_app() -> None:
    """With --workers > 1 the process that runs `gateway serve` only supervises: Litestar,
    prometheus_client and the app stay out of it (~25 MB it would hold for nothing)."""
    code = (
        "import sys, gateway.ops.cli, gateway.ops.serving; "
        "print(sorted(m for m in ('litestar', 'prometheus_client', 'gateway.app') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_workers_stop_when_their_supervisor_is_killed_hard() -> None:
    """SIGKILL gives `gateway serve` no chance to stop its workers: they notice and drain,
    instead of serving the port on as orphans and blocking the next start."""
    with standin_tier() as dev:
        env = {
            "GATEWAY_TIER_DEV_URL": f"http://127.0.0.1:{dev.server_address[1]}",
            "GATEWAY_TIER_DEV_KIND": "openai",
        }
        with gateway_process(env, "--workers", "2") as (proc, url):
            workers = subprocess.run(
                ["pgrep", "-P", str(proc.pid), "-f", "spawn_main"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            assert len(workers) == 2
            proc.kill()  # the supervisor only
            proc.wait()
            deadline = time.monotonic() + 20
            alive = workers
            while alive and time.monotonic() < deadline:
                time.sleep(0.2)
                alive = [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
            assert alive == []
            with pytest.raises(httpx.TransportError):
                httpx.get(url + "/health", timeout=1.0)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_drain_refuses_new_requests_while_in_flight_ones_finish(workers: str) -> None:
    """SIGTERM to `gateway serve` (as an orchestrator sends it): requests in flight in every
    worker finish with their answers; a request arriving meanwhile is refused (a client or
    balancer retries elsewhere), never accepted and then reset."""
    with standin_tier(answer_delay_s=4.0) as upstream:
        env = {
            "GATEWAY_TIER_DEV_URL": f"http://127.0.0.1:{upstream.server_address[1]}",
            "GATEWAY_TIER_DEV_KIND": "openai",
        }
        with gateway_process(env, "--workers", workers) as (proc, url):
            body = {"prompt": "p", "schema": PERSON_SCHEMA}

            def in_flight(_: int) -> httpx.Response:
                # new connections, so with two workers both hold requests
                return httpx.post(
                    url + "/generate", json=body, timeout=30, headers={"connection": "close"}
                )

            with ThreadPoolExecutor(max_workers=6) as pool:
                calls = [pool.submit(in_flight, i) for i in range(6)]
                upstream.wait_seen(6)  # all six are at the tier
                proc.send_signal(signal.SIGTERM)
                time.sleep(1.0)  # the supervisor has passed SIGTERM on to its workers
                refused = reset = answered = 0
                while any(not call.done() for call in calls):
                    try:
                        httpx.post(url + "/generate", json=body, timeout=10)
                        answered += 1
                    except httpx.ConnectError:
                        refused += 1
                    except httpx.TransportError:
                        reset += 1
                    time.sleep(0.1)
                responses = [call.result() for call in calls]
            assert proc.wait(timeout=30) == 0
    assert [r.status_code for r in responses] == [200] * 6
    assert reset == 0
    assert answered == 0
    assert refused > 0
