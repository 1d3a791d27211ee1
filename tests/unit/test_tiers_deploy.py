"""`gateway deploy` / doctor: clear sentences and exit codes, never a traceback."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import pytest

from gateway.tierspec import TierSpec, load_tier_specs
from tiers import deploy as deploy_mod
from tiers import layout
from tiers.deploy import compare_autoscaler, deploy, doctor

SPECS = load_tier_specs(layout.TIERS_FILE)
TOKEN = {"MODAL_TOKEN_ID": "ak-test", "MODAL_TOKEN_SECRET": "as-test"}


class Recorder:
    """Stands in for the modal CLI: records each call, answers with a set status."""

    def __init__(self, status: int = 0) -> None:
        self.status = status
        self.calls: list[tuple[list[str], dict[str, str], Path]] = []

    def __call__(self, argv: list[str], env: Mapping[str, str], cwd: Path) -> int:
        self.calls.append((argv, dict(env), cwd))
        return self.status


def fake_url(tier: str, spec: TierSpec) -> str:
    return f"https://ws--tier-gateway-{tier}.modal.run"


def fake_prefetch(tier: str, spec: TierSpec) -> str:
    return f"/cache/huggingface/models--{spec.model.replace('/', '--')}/snapshots/{spec.revision}"


def run_deploy(
    tier: str, runner: Recorder, environ: Mapping[str, str], **kw: object
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = deploy(
        tier,
        run=runner,
        lookup_url=fake_url,
        prefetch=fake_prefetch,
        environ=environ,
        out=out,
        err=err,
        **kw,  # type: ignore[arg-type]
    )
    return status, out.getvalue(), err.getvalue()


def test_deploy_one_tier_prints_the_gateway_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: ["modal"])
    runner = Recorder()
    status, out, err = run_deploy("prod", runner, TOKEN)
    assert status == 0, err
    [(argv, env, cwd)] = runner.calls
    assert argv == ["modal", "deploy", "-m", "tiers.modal_app"]
    assert env[layout.TIER_ENV_VAR] == "prod"
    assert env[layout.CONFIG_ENV_VAR] == str(layout.TIERS_FILE)
    assert cwd == layout.ROOT
    assert "GATEWAY_TIER_PROD_URL=https://ws--tier-gateway-prod.modal.run" in out
    assert "GATEWAY_MODAL_KEY=" in out
    assert "GATEWAY_TIER_DEV_URL" not in out
    assert f"weights at {fake_prefetch('prod', SPECS['prod'])}" in out


def test_deploy_all_deploys_every_tier_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: ["modal"])
    runner = Recorder()
    status, out, _ = run_deploy("all", runner, TOKEN)
    assert status == 0
    assert [env[layout.TIER_ENV_VAR] for _, env, _ in runner.calls] == sorted(SPECS)
    assert "GATEWAY_TIER_DEV_URL=" in out
    assert "GATEWAY_TIER_PROD_URL=" in out


def test_failed_modal_deploy_stops_with_its_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: ["modal"])
    runner = Recorder(status=3)
    status, out, err = run_deploy("all", runner, TOKEN)
    assert status == 3
    assert len(runner.calls) == 1  # prod is not attempted after dev failed
    assert "failed for dev (exit 3)" in err
    assert "_URL=" not in out


def test_missing_modal_cli_is_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: None)
    runner = Recorder()
    status, _, err = run_deploy("dev", runner, TOKEN)
    assert status == 2
    assert "modal CLI is not installed" in err
    assert "Traceback" not in err
    assert runner.calls == []


def test_missing_token_is_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: ["modal"])
    monkeypatch.setattr(deploy_mod, "has_token", lambda environ=None: False)
    runner = Recorder()
    status, _, err = run_deploy("dev", runner, {})
    assert status == 2
    assert "modal token new" in err
    assert runner.calls == []


def test_token_from_environment_is_enough() -> None:
    assert deploy_mod.has_token(TOKEN) is True


def test_unknown_tier_and_unpinned_revision_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: ["modal"])
    runner = Recorder()
    status, _, err = run_deploy("staging", runner, TOKEN)
    assert (status, runner.calls) == (2, [])
    assert "no tier 'staging'" in err
    bad = tmp_path / "tiers.toml"
    bad.write_text(layout.TIERS_FILE.read_text().replace(SPECS["dev"].revision, "main"))
    status, _, err = run_deploy("all", runner, TOKEN, config=bad)
    assert (status, runner.calls) == (2, [])
    assert "'main' is not a 40-hex commit SHA" in err


def test_url_lookup_failure_still_reports_the_deploy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: ["modal"])

    def no_url(tier: str, spec: TierSpec) -> str:
        raise ConnectionError("network down")

    out, err = io.StringIO(), io.StringIO()
    status = deploy("dev", run=Recorder(), lookup_url=no_url, environ=TOKEN, out=out, err=err)
    assert status == 0
    assert "deployed but its URL look-up failed (network down)" in err.getvalue()


def test_doctor_without_credentials_says_what_it_could_not_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: ["modal"])
    monkeypatch.setattr(deploy_mod, "has_token", lambda environ=None: False)
    out = io.StringIO()
    assert doctor(environ={}, out=out) == 0
    text = out.getvalue()
    assert "dev: config ok" in text
    assert "prod: config ok" in text
    assert "could not check deployments: no Modal token" in text


def test_doctor_flags_a_bad_tiers_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: None)
    bad = tmp_path / "tiers.toml"
    bad.write_text(layout.TIERS_FILE.read_text().replace(SPECS["prod"].revision, "main"))
    out = io.StringIO()
    assert doctor(config=bad, out=out) == 1
    assert "prod: tier 'prod': revision 'main'" in out.getvalue()
    assert "modal is not installed" in out.getvalue()


def test_autoscaler_drift_is_listed() -> None:
    modal_types = pytest.importorskip("modal.types")
    live = modal_types.FunctionAutoscalerSettings(
        min_containers=None, max_containers=2, scaledown_window=900, buffer_containers=None
    )
    assert compare_autoscaler(SPECS["prod"], live) == []
    warm = modal_types.FunctionAutoscalerSettings(
        min_containers=1, max_containers=None, scaledown_window=60, buffer_containers=None
    )
    assert compare_autoscaler(SPECS["prod"], warm) == [
        "min_containers: live 1, config 0",
        "max_containers: live None, config 2",
        "scaledown_window: live 60, config 900",
    ]


def test_prefetch_failure_keeps_the_deploy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: ["modal"])

    def hub_down(tier: str, spec: TierSpec) -> str:
        raise TimeoutError("hub unreachable")

    out, err = io.StringIO(), io.StringIO()
    status = deploy(
        "dev",
        run=Recorder(),
        lookup_url=fake_url,
        prefetch=hub_down,
        environ=TOKEN,
        out=out,
        err=err,
    )
    assert status == 0
    assert "weights prefetch failed (hub unreachable)" in err.getvalue()
    assert "GATEWAY_TIER_DEV_URL=https://ws--tier-gateway-dev.modal.run" in out.getvalue()


def test_prefetch_can_be_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy_mod, "modal_cli", lambda: ["modal"])
    out = io.StringIO()
    deploy("dev", run=Recorder(), lookup_url=fake_url, prefetch=None, environ=TOKEN, out=out)
    assert "weights" not in out.getvalue()
