"""The gateway's own Modal app (deploy/modal_gateway.py) builds offline, without a token,
from the same config a local `gateway serve` reads; the Redis URL and the tiers' secrets
reach it only as Modal secrets."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("modal")

from modal._utils.async_utils import synchronizer

import gateway
from gateway.settings import load_settings

REPO = Path(gateway.__file__).resolve().parent.parent


@pytest.fixture
def module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("modal_gateway", REPO / "deploy/modal_gateway.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def test_a_cpu_web_app_with_redis_and_the_tiers_as_secrets(module: ModuleType) -> None:
    info = module.web.info()
    assert module.app.name == "tier-gateway"
    assert info.gpus == []  # the gateway never needs a GPU
    assert info.cpu == 1.0 and info.memory_mib == 512
    assert info.secrets == [
        "modal.Secret.from_name('tier-gateway-state')",
        "modal.Secret.from_name('tier-gateway-tiers')",
    ]
    assert info.concurrency_info.max_inputs == module.MAX_INPUTS
    webhook = synchronizer._translate_in(module.web)._webhook_config
    assert webhook.requires_proxy_auth is False  # the gateway's own keys guard it


def test_the_container_needs_a_key_from_the_shared_store(module: ModuleType) -> None:
    """With the state secret's Redis URL, the image's environment turns keys on, kept in
    that Redis: the URL is never open to anyone who finds it."""
    environ = {**module.image_env(), "GATEWAY_STATE": "redis://:pw@redis.example.com:6379/0"}
    environ["GATEWAY_CONFIG"] = str(REPO / "config" / "gateway.toml")
    settings = load_settings(environ=environ)
    assert settings.keys_on
    assert settings.keys_store is not None and settings.keys_store.reveal() == (
        "redis://:pw@redis.example.com:6379/0"
    )


def test_requests_may_wait_out_the_longest_cold_budget(module: ModuleType) -> None:
    settings = load_settings(environ={"GATEWAY_LOCAL_TIER": "off"})
    longest = max(tier.timeouts.cold for tier in settings.tiers.values())
    assert module.web.info().timeout >= longest


def test_image_is_built_from_the_same_config_and_dependencies(module: ModuleType) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert module.runtime_requirements() == project["dependencies"]
    assert any(req.startswith("redis") for req in module.runtime_requirements())
    # installed at the committed lock's versions: every runtime dependency is pinned there
    pins = {pin.split("==")[0].lower().replace("_", "-") for pin in module.locked_pins()}
    for requirement in module.runtime_requirements():
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        assert name.lower().replace("_", "-") in pins, name
    assert module.PYTHON == "3.11"  # the lock's interpreter (scripts/lock)
    env = module.image_env()
    assert env["GATEWAY_LOCAL_TIER"] == "off"  # no CPU model in a CPU web container
    # the container reads the file shipped beside it, the one `gateway serve` reads here
    assert env["GATEWAY_CONFIG"] == "/root/config/gateway.toml"
    assert not any("GATEWAY_STATE" in key or "MODAL" in key for key in env)  # secrets only
