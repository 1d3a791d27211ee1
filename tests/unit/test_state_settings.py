"""The shared store is chosen in config or by GATEWAY_STATE; a bad URL is refused naming
where it came from, without echoing it (it may hold a password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import DEFAULT_CONFIG, SettingsError, load_settings


def test_default_is_no_redis() -> None:
    settings = load_settings(environ={})
    assert settings.state is None
    assert settings.state_prefix == "tier-gateway"
    assert settings.warmup_lease_s == 30.0


def test_gateway_state_picks_redis_and_hides_its_password() -> None:
    url = "redis://:hunter2@redis.internal:6379/0"
    settings = load_settings(environ={"GATEWAY_STATE": url})
    assert settings.state is not None and settings.state.reveal() == url
    assert "hunter2" not in repr(settings)


def test_a_state_that_is_not_a_redis_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_STATE") as caught:
        load_settings(environ={"GATEWAY_STATE": "http://:hunter2@example.com"})
    assert "hunter2" not in str(caught.value)


def test_state_settings_come_from_the_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    text = DEFAULT_CONFIG.read_text().replace(
        'tiers_file = "tiers.toml"',
        f'tiers_file = "{DEFAULT_CONFIG.parent / "tiers.toml"}"\n'
        'state = "rediss://cache.example.com:6380/2"\nstate_prefix = "team-a"\n'
        "state_timeout_s = 0.5\nwarmup_lease_s = 3.0",
    )
    config.write_text(text)
    settings = load_settings(config, environ={})
    assert settings.state is not None
    assert settings.state.reveal() == "rediss://cache.example.com:6380/2"
    assert (settings.state_prefix, settings.state_timeout_s, settings.warmup_lease_s) == (
        "team-a",
        0.5,
        3.0,
    )
    bad = config.read_text().replace('state_prefix = "team-a"', 'state_prefix = "a:b"')
    config.write_text(bad)
    with pytest.raises(SettingsError, match="state_prefix"):
        load_settings(config, environ={})
