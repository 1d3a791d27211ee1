"""Settings: the files, the environment overrides, and errors that name key and source."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Secret, SettingsError, load_settings


def test_defaults_from_the_repo_config() -> None:
    settings = load_settings(environ={})
    dev, prod = settings.tiers["dev"], settings.tiers["prod"]
    assert settings.default_tier == "dev" and settings.env is None
    assert settings.max_body_bytes == 1_048_576
    assert (dev.timeouts.warm, dev.timeouts.cold) == (120.0, 180.0)
    assert (prod.timeouts.warm, prod.timeouts.cold) == (120.0, 600.0)
    assert prod.fallback == ("dev",) and prod.fallback_mode == "allow"
    assert prod.max_redirects == 5  # 600 s / 150 s hold, + 1
    assert prod.model == "prod"  # tiers.toml served_model_name
    assert prod.spec is not None and prod.spec.expected_cold_start_s == 424
    # no URL: dev is served by the embedded CPU tier, prod is unconfigured
    assert dev.kind == "local" and dev.url is None
    assert prod.kind == "modal" and not prod.configured


def test_environment_overrides() -> None:
    settings = load_settings(
        environ={
            "GATEWAY_ENV": "prod",
            "GATEWAY_TIER_PROD_URL": "https://acme--prod.modal.run/",
            "GATEWAY_TIER_DEV_URL": "http://10.0.0.5:8000",
            "GATEWAY_TIER_DEV_KIND": "openai",
            "GATEWAY_MODAL_KEY": "wk-1",
            "GATEWAY_MODAL_SECRET": "ws-2",
        }
    )
    assert settings.env == "prod"
    assert settings.tiers["prod"].url == "https://acme--prod.modal.run"
    assert settings.tiers["dev"].kind == "openai"
    assert settings.modal_key is not None and settings.modal_key.reveal() == "wk-1"


def test_embedded_tier_can_be_turned_off() -> None:
    settings = load_settings(environ={"GATEWAY_LOCAL_TIER": "off"})
    assert settings.tiers["dev"].kind == "modal" and settings.embedded_tier is None


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"GATEWAY_ENV": "staging"}, "GATEWAY_ENV"),
        ({"GATEWAY_TIER_PROD_URL": "ftp://x"}, "GATEWAY_TIER_PROD_URL"),
        ({"GATEWAY_TIER_PROD_KIND": "grpc"}, "GATEWAY_TIER_PROD_KIND"),
        ({"GATEWAY_MODAL_KEY": "wk-only"}, "GATEWAY_MODAL_SECRET"),
        ({"GATEWAY_LOCAL_TIER": "maybe"}, "GATEWAY_LOCAL_TIER"),
        ({"GATEWAY_CONFIG": "/nonexistent/gateway.toml"}, "GATEWAY_CONFIG"),
        ({"GATEWAY_ALLOWED_HOSTS": "https://gateway.example"}, "GATEWAY_ALLOWED_HOSTS: .* URL"),
        ({"GATEWAY_ALLOWED_HOSTS": "ok.example, bad host"}, "GATEWAY_ALLOWED_HOSTS: 'bad host'"),
        ({"GATEWAY_CORS_ALLOW_ORIGINS": "app.example"}, "GATEWAY_CORS_ALLOW_ORIGINS: .* origin"),
        # a trailing slash or the default port never matches what a browser sends
        (
            {"GATEWAY_CORS_ALLOW_ORIGINS": "https://app.example/"},
            "sends it as 'https://app.example'",
        ),
        ({"GATEWAY_CORS_ALLOW_ORIGINS": "https://app.example:443"}, "'https://app.example'"),
    ],
)
def test_bad_environment_names_the_key(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings(environ=env)


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ('default_tier = "dev"\n[tiers.dev]\nkind = "grpc"\n', "kind"),
        ("[tiers.dev]\n[tiers.dev.timeouts]\nwarm = -1\n", "warm"),
        ('[tiers.dev]\nfallback = ["nope"]\n', "fallback"),
        ('default_tier = "x"\n[tiers.dev]\n', "default_tier"),
        ('[tiers.dev]\ncolour = "red"\n', "colour"),
        ('[tiers.dev]\nkeep_warm = "Mon-Fri 8-19 Europe/Berlin"\n', "tiers.dev.keep_warm"),
        ("not toml =", "TOML"),
        ('[server]\nallowed_hosts = ["gateway/x"]\n[tiers.dev]\n', "server.allowed_hosts"),
        ('[server.cors]\nallow_origins = ["ftp://x"]\n[tiers.dev]\n', "server.cors.allow_origins"),
        ('[server.cors]\nallow_headers = ["a b"]\n[tiers.dev]\n', "server.cors.allow_headers"),
        ("[server.cors]\nmax_age_s = -1\n[tiers.dev]\n", "server.cors.max_age_s"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, toml: str, names: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('tiers_file = ""\n' + toml if "tiers_file" not in toml else toml)
    with pytest.raises(SettingsError, match=names) as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value) or names == "GATEWAY_CONFIG"


def test_secret_never_shows_itself() -> None:
    secret = Secret("ws-very-secret")
    assert "very-secret" not in repr(secret) and "very-secret" not in str(secret)
    settings = load_settings(
        environ={"GATEWAY_MODAL_KEY": "wk-abc", "GATEWAY_MODAL_SECRET": "ws-xyz"}
    )
    assert "ws-xyz" not in repr(settings) and "wk-abc" not in repr(settings)


def test_hosts_and_origins_default_to_off_and_come_from_the_environment() -> None:
    server = load_settings(environ={}).server
    assert server.allowed_hosts == () and not server.cors.enabled  # the zero-config run
    server = load_settings(
        environ={
            "GATEWAY_ALLOWED_HOSTS": " Gateway.Example ,*.gw.example,gw.internal:8000,,[::1]:8000",
            "GATEWAY_CORS_ALLOW_ORIGINS": "https://App.Example, http://localhost:5173",
        }
    ).server
    assert server.allowed_hosts == (
        "gateway.example",
        "*.gw.example",
        "gw.internal:8000",
        "[::1]:8000",
    )
    assert server.cors.allow_origins == ("https://app.example", "http://localhost:5173")
    assert "x-model-tier-served" in server.cors.expose_headers
