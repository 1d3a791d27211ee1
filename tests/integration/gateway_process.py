"""``gateway serve`` as a real process, for every test that needs one: on a free loopback
port, in its own process group (workers and the embedded tier go with it), ready when
``/health`` answers, and stopped however the test ends: SIGTERM to the group (the gateway
drains), then SIGKILL for whatever is left.

>>> with gateway_process({"GATEWAY_TIER_DEV_URL": url}, "--workers", "2") as (proc, base):
...     httpx.get(base + "/health")
>>> with gateway_processes(3, {"GATEWAY_STATE": redis_url}, logs=paths) as replicas:
...     [httpx.get(base + "/status") for _, base in replicas]   # three replicas, one Redis
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import pytest

from gateway.ops.serving import free_port

STARTUP_S = 30.0  # a cold interpreter imports litestar, msgspec, httpx, uvicorn
STOP_S = 30.0  # a drain of in-flight requests; then SIGKILL


@contextmanager
def gateway_process(
    env: dict[str, str],
    *args: str,
    local_tier: bool = False,
    startup_s: float = STARTUP_S,
    log: Path | None = None,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``gateway serve --port P *args``. The test's environment is inherited without its
    ``GATEWAY_*`` and ``PROMETHEUS_*`` variables, so only ``env`` configures the gateway; the
    embedded CPU tier is off unless ``local_tier``. Its output is the process's ``stdout``
    pipe, or the file ``log`` (for a gateway that talks more than a pipe holds unread)."""
    with gateway_processes(
        1,
        env,
        *args,
        local_tier=local_tier,
        startup_s=startup_s,
        logs=None if log is None else [log],
    ) as started:
        yield started[0]


@contextmanager
def gateway_processes(
    count: int,
    env: dict[str, str],
    *args: str,
    local_tier: bool = False,
    startup_s: float = STARTUP_S,
    logs: list[Path] | None = None,
) -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    """``count`` gateways alike (replicas, as on several machines), started together and each
    ready when this yields; ``logs[i]`` receives replica i's output (see ``gateway_process``)."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))
    }
    if not local_tier:
        inherited["GATEWAY_LOCAL_TIER"] = "off"
    started: list[tuple[subprocess.Popen[str], str]] = []
    with contextlib.ExitStack() as stack:
        for i in range(count):
            port = free_port()
            output: IO[str] | int = subprocess.PIPE
            if logs is not None:
                output = stack.enter_context(logs[i].open("w"))
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.ops.cli", "serve", "--port", str(port), *args],
                env={**inherited, **env},
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its own group: workers are stopped with it, never orphaned
            )
            stack.callback(_stopped, proc)
            started.append((proc, f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + startup_s
        for i, (proc, url) in enumerate(started):
            while not _answers(url):
                if time.monotonic() > deadline or proc.poll() is not None:
                    stop_group(proc, grace_s=0)
                    said = proc.communicate()[0] if logs is None else logs[i].read_text()
                    pytest.fail(f"gateway did not start: {said}")
                time.sleep(0.1)  # a process's start-up has no event to wait on from here
        yield started


def _stopped(proc: subprocess.Popen[str]) -> None:
    stop_group(proc)
    if proc.stdout is not None:
        proc.stdout.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def stop_group(proc: subprocess.Popen[str], grace_s: float = STOP_S) -> None:
    """SIGTERM to the whole group (supervisor and workers drain), SIGKILL what is left."""
    if grace_s > 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers still draining, or a hung supervisor
    proc.wait()
