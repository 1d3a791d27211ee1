"""The Modal app builds offline, without credentials, from config/tiers.toml.

Each tier's module is imported the way `modal deploy -m tiers.modal_app` imports it (the tier
named in TIERS_MODAL_TIER), and the test reads back what modal recorded from the decorators.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

pytest.importorskip("modal")

from modal._utils.async_utils import synchronizer

from gateway.tierspec import load_tier_specs
from tiers import layout
from tiers.deploy import compare
from tiers.vllm_command import UnpinnedRevision, vllm_command

SPECS = load_tier_specs(layout.TIERS_FILE)


def load_app(
    monkeypatch: pytest.MonkeyPatch, tier: str, tiers_file: Path | None = None
) -> ModuleType:
    monkeypatch.setenv(layout.TIER_ENV_VAR, tier)
    if tiers_file is None:
        monkeypatch.delenv(layout.CONFIG_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(layout.CONFIG_ENV_VAR, str(tiers_file))
    monkeypatch.delitem(sys.modules, "tiers.modal_app", raising=False)
    return importlib.import_module("tiers.modal_app")


@pytest.fixture(autouse=True)
def _forget_module() -> Iterator[None]:
    yield
    sys.modules.pop("tiers.modal_app", None)


@pytest.mark.parametrize("tier", sorted(SPECS))
def test_function_carries_the_tier_config(tier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPECS[tier]
    module = load_app(monkeypatch, tier)
    assert module.app.name == f"tier-gateway-{tier}"
    info = module.serve.info()
    assert info.gpus == [(spec.gpu, 1)]
    assert info.startup_timeout == spec.startup_timeout_s
    assert info.timeout == spec.request_timeout_s
    assert info.concurrency_info.max_inputs == spec.max_concurrency
    assert info.web_info.unauthenticated is False  # proxy auth: refused at Modal's edge
    assert {path: v.name for path, v in info.volumes.items()} == {
        "/cache/huggingface": "tier-gateway-hf-cache",
        "/cache/vllm": f"tier-gateway-{tier}-vllm-cache",
    }
    assert compare(spec, info) == []


@pytest.mark.parametrize("tier", sorted(SPECS))
def test_web_server_waits_for_a_whole_cold_boot(tier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = SPECS[tier]
    module = load_app(monkeypatch, tier)
    webhook = synchronizer._translate_in(module.serve)._webhook_config
    assert webhook.web_server_port == spec.port
    assert webhook.web_server_startup_timeout == spec.startup_timeout_s  # not Modal's 5 s
    assert webhook.requires_proxy_auth is True
    assert webhook.requested_suffix == f"tier-gateway-{tier}"


@pytest.mark.parametrize("tier", sorted(SPECS))
def test_autoscaling_and_container_env_come_from_config(
    tier: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = SPECS[tier]
    module = load_app(monkeypatch, tier)
    settings = module.function_settings(spec)
    assert settings["scaledown_window"] == spec.scaledown_window_s
    assert settings["min_containers"] == spec.min_containers
    assert settings["max_containers"] == spec.max_containers
    env = module.image_env(tier, spec)
    assert env[layout.TIER_ENV_VAR] == tier  # the container re-imports the same tier
    assert env["VLLM_CACHE_ROOT"] == "/cache/vllm"  # compile cache on its Volume
    assert env["HF_HUB_CACHE"] == "/cache/huggingface"
    assert "VLLM_SERVER_DEV_MODE" not in env
    assert vllm_command(spec) == module.COMMAND


def test_container_gets_only_the_sources_it_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_app(monkeypatch, "dev")
    keep = module._container_source  # True means "leave out"; paths relative to the package
    assert not keep(Path("tierspec.py"))
    assert not keep(Path("vllm_command.py"))
    assert keep(Path("app.py"))  # the gateway itself never ships
    assert keep(Path("py.typed"))
    assert keep(Path("local/server.py"))  # nor the CPU tier
    assert keep(Path("local/__init__.py"))
    assert keep(Path("routes/__init__.py"))


def test_tier_must_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(layout.TIER_ENV_VAR, raising=False)
    monkeypatch.delitem(sys.modules, "tiers.modal_app", raising=False)
    with pytest.raises(RuntimeError, match="TIERS_MODAL_TIER"):
        importlib.import_module("tiers.modal_app")


def test_unpinned_revision_never_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = tmp_path / "tiers.toml"
    bad.write_text(layout.TIERS_FILE.read_text().replace(SPECS["prod"].revision, "main"))
    with pytest.raises(UnpinnedRevision):
        load_app(monkeypatch, "prod", bad)


def test_snapshot_path_is_opt_in_and_builds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = layout.TIERS_FILE.read_text()
    snap = tmp_path / "tiers.toml"
    # Turn the snapshot on for dev only.
    snap.write_text(text.replace("gpu_snapshot = false", "gpu_snapshot = true", 1))
    assert load_tier_specs(snap)["dev"].gpu_snapshot
    module = load_app(monkeypatch, "dev", snap)
    assert not hasattr(module, "serve")
    assert "--enable-sleep-mode" in module.COMMAND
    assert module.image_env("dev", module.SPEC)["VLLM_SERVER_DEV_MODE"] == "1"
    assert snap == module.TIERS_FILE  # the file deployed is the file shipped
    assert module.SnapshotServer is not None
    default = msgspec.structs.replace(module.SPEC, gpu_snapshot=False)
    assert "--enable-sleep-mode" not in vllm_command(default)


def test_compare_names_each_drifted_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    info = load_app(monkeypatch, "prod").serve.info()
    drifted = dataclasses.replace(
        info,
        gpus=[("A100-40GB", 1)],
        startup_timeout=300,
        web_info=dataclasses.replace(info.web_info, unauthenticated=True),
    )
    assert compare(SPECS["prod"], drifted) == [
        "gpu: deployed ['A100-40GB'], config ['A100-80GB']",
        "startup_timeout: deployed 300, config 900",
        "proxy auth required: deployed False, config True",
    ]


def test_container_reimport_needs_only_the_shipped_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Lay out /root as the image would (the sources modal ships + the tiers file) and import
    tiers.modal_app there, in a fresh interpreter that cannot see the repository."""
    import subprocess

    from modal.mount import _Mount

    module = load_app(monkeypatch, "prod")
    root = tmp_path / "root"
    mount = _Mount._from_local_python_packages("gateway", "tiers", ignore=module._container_source)
    shipped = [str(remote) for entry in mount._entries for _, remote in entry.get_files_to_upload()]
    for local, remote in (p for entry in mount._entries for p in entry.get_files_to_upload()):
        target = root / Path(remote).relative_to("/root")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(local).read_bytes())
    config = root / Path(layout.CONTAINER_TIERS_FILE).relative_to("/root")
    config.parent.mkdir(parents=True)
    config.write_bytes(layout.TIERS_FILE.read_bytes())
    assert sorted(shipped) == [
        "/root/gateway/__init__.py",
        "/root/gateway/tierspec.py",
        "/root/tiers/__init__.py",
        "/root/tiers/layout.py",
        "/root/tiers/modal_app.py",
        "/root/tiers/snapshot.py",
        "/root/tiers/vllm_command.py",
    ]

    code = "import tiers.modal_app as m; print(m.app.name, m.SPEC.model, m.layout.TIERS_FILE)"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), layout.TIER_ENV_VAR: "prod"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "tier-gateway-prod",
        "Qwen/Qwen2.5-32B-Instruct",
        str(config),
    ]


@pytest.mark.parametrize("tier", sorted(SPECS))
def test_weights_download_runs_without_a_gpu(tier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_app(monkeypatch, tier)
    info = module.download_weights.info()
    assert info.gpus == []  # the Hub download never holds a GPU
    assert info.timeout == module.DOWNLOAD_TIMEOUT_S
    assert {path: v.name for path, v in info.volumes.items()} == {
        "/cache/huggingface": "tier-gateway-hf-cache"
    }
    assert info.web_info is None  # not reachable from the Internet
