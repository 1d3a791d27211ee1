"""The gateway itself as a Modal CPU web app: N containers, one Redis, the same config.

    modal secret create tier-gateway-state GATEWAY_STATE=redis://:PASSWORD@HOST:6379/0
    modal secret create tier-gateway-tiers GATEWAY_TIER_DEV_URL=... GATEWAY_TIER_PROD_URL=... \\
        GATEWAY_MODAL_KEY=wk-... GATEWAY_MODAL_SECRET=ws-...
    modal deploy deploy/modal_gateway.py                     # needs a Modal token

The image holds the gateway's own sources and its runtime dependencies, read from
``pyproject.toml`` at the versions of ``requirements.lock.txt`` (never torch, vLLM or
modal), and the same ``config/gateway.toml`` and
``config/tiers.toml`` a local ``gateway serve`` reads. Secrets are environment variables
in the container, read by ``gateway.settings`` like any other: the Redis URL (it may hold a
password) and the tiers' URLs and proxy-auth token never enter the image.

Every container is a replica: warm-ups stay single-flight across all of them through Redis,
so ``max_containers`` may grow without a second warm-up of the same GPU. Without the
``GATEWAY_STATE`` secret each container keeps its own warmth (and warms tiers on its own).

The gateway's own API keys guard the URL: they live in the same Redis
(``GATEWAY_KEYS_STORE=state``), so ``gateway keys create|revoke`` run against that Redis
reaches every container within about a second, and every route but ``/health`` needs a
key. An empty Redis has no keys: the URL answers 401 until the first key is made (closed by
default). OpenAI clients send the key as ``api_key=``; Modal proxy auth would ask every
client for two Modal headers instead.

Modal's edge answers a request still running after 150 s with a 303 to a result URL; an
HTTP client that follows redirects (curl -L, httpx follow_redirects) keeps waiting through
a prod cold start. Checked offline by tests/unit/test_modal_gateway.py.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import modal

ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "tier-gateway"
CONTAINER_ROOT = "/root"
PYTHON = "3.11"  # the Python the lock was made for (scripts/lock)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
STATE_SECRET = "tier-gateway-state"  # noqa: S105 - a Secret's name: holds GATEWAY_STATE
TIERS_SECRET = "tier-gateway-tiers"  # noqa: S105 - a name: tier URLs, Modal proxy auth

# One container holds thousands of waiting requests (bench/results/hold-10k.md: ~20 KB
# each); 1000 leaves room, and Modal adds a container past it.
MAX_INPUTS = 1000
# A request may wait out prod's whole cold budget (config/gateway.toml: 600 s), plus margin.
REQUEST_TIMEOUT_S = 660
SETTINGS: dict[str, Any] = {
    "cpu": 1.0,  # one worker process: the gateway's work is I/O
    "memory": 512,  # MiB: 73 MB idle, ~280 MB holding 10k clients (the bench)
    "min_containers": 1,  # the front door stays up; the GPUs behind it scale to zero
    "max_containers": 4,  # replicas; each one shares warmth through Redis
    "scaledown_window": 300,
    "timeout": REQUEST_TIMEOUT_S,
}


def runtime_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The gateway's own dependencies, as pyproject.toml states them (no extras)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return list(project["dependencies"])


def locked_pins(lock: Path = ROOT / "requirements.lock.txt") -> list[str]:
    """``name==version`` of every package in the committed lock: the image installs the
    gateway's dependencies at these versions, as `scripts/serve` does. (Only the pins: the
    lock's hashes are for installing the whole lock, and a constraints file cannot hold
    them; the whole lock would bring torch into a CPU web app.)"""
    pins = []
    for line in lock.read_text().splitlines():
        if match := _PIN.match(line):
            pins.append(f"{match[1]}=={match[2]}")
    return pins


def image_env() -> dict[str, str]:
    return {
        "GATEWAY_CONFIG": f"{CONTAINER_ROOT}/config/gateway.toml",
        "GATEWAY_LOCAL_TIER": "off",  # no CPU model in this image: dev must have a URL
        # API keys in the state secret's Redis: one `gateway keys` for every container
        "GATEWAY_KEYS_STORE": "state",
    }


def build_image() -> modal.Image:
    return (
        modal.Image.debian_slim(python_version=PYTHON)
        .run_commands(
            f"printf '%s\\n' {shlex.join(locked_pins())} > /tmp/lock-constraints.txt",
            "pip install --no-compile -c /tmp/lock-constraints.txt "
            + shlex.join(runtime_requirements()),
        )
        .env(image_env())
        .add_local_file(ROOT / "config" / "gateway.toml", f"{CONTAINER_ROOT}/config/gateway.toml")
        .add_local_file(ROOT / "config" / "tiers.toml", f"{CONTAINER_ROOT}/config/tiers.toml")
        .add_local_python_source("gateway")
    )


app = modal.App(APP_NAME)


@app.function(
    image=build_image(),
    secrets=[modal.Secret.from_name(STATE_SECRET), modal.Secret.from_name(TIERS_SECRET)],
    include_source=False,
    **SETTINGS,
)
@modal.concurrent(max_inputs=MAX_INPUTS)
@modal.asgi_app()  # open at Modal's edge: the gateway's keys (in Redis) guard it
def web() -> Any:
    from gateway.app import app_from_env  # in the container, with its settings from secrets

    return app_from_env()
