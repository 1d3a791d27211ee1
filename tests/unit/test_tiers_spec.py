"""config/tiers.toml through gateway/tierspec.py: what the gateway reads is what deploys."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.tierspec import TierSpecError, load_tier_specs
from tiers import layout

RAW = tomllib.loads(layout.TIERS_FILE.read_text())["tiers"]
SPECS = load_tier_specs(layout.TIERS_FILE)
# The fields gateway/settings.py takes from a TierSpec (names are a contract: do not rename).
GATEWAY_FIELDS = (
    "expected_cold_start_s",
    "scaledown_window_s",
    "served_model_name",
    "gpu",
    "model",
    "startup_timeout_s",
)


def test_the_gateway_and_the_deployment_see_the_same_tiers() -> None:
    assert set(SPECS) == set(RAW) == {"dev", "prod"}


@pytest.mark.parametrize("tier", sorted(RAW))
@pytest.mark.parametrize("field", GATEWAY_FIELDS)
def test_gateway_defaults_equal_the_tier_config(tier: str, field: str) -> None:
    assert getattr(SPECS[tier], field) == RAW[tier][field]


def test_every_configured_key_reaches_the_spec() -> None:
    for tier, table in RAW.items():
        for key, value in table.items():
            assert getattr(SPECS[tier], key) == value, (tier, key)


def test_served_names_are_the_tier_names() -> None:
    # The gateway sends `model: <tier>`; vLLM answers only to its --served-model-name.
    assert {name: spec.served_model_name for name, spec in SPECS.items()} == {
        "dev": "dev",
        "prod": "prod",
    }


def test_experimental_snapshots_are_off_by_default() -> None:
    assert not any(spec.gpu_snapshot for spec in SPECS.values())


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("scaledown_window_s = 300", "scaledown_window_s = 1", "scaledown_window_s"),
        ("scaledown_window_s = 900", "scaledown_window_s = 7200", "scaledown_window_s"),
        ("gpu_memory_utilization = 0.90", "gpu_memory_utilization = 1.5", "gpu_memory_utilization"),
        ('gpu = "L40S"', 'gpu = "L40"', "gpu"),
        ("max_concurrency = 16", "max_concurrency = 0", "max_concurrency"),
        ("port = 8000", "port = 80000", "port"),
        ("max_containers = 2", "max_containers = 0", "max_containers"),
        ("fast_boot = false", "fast_boot = false\nkeep_warm = true", "keep_warm"),
    ],
)
def test_out_of_range_values_name_the_key(
    tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    text = layout.TIERS_FILE.read_text()
    assert old in text
    path = tmp_path / "tiers.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(TierSpecError, match=complaint):
        load_tier_specs(path)


def test_load_tier_names_the_known_tiers() -> None:
    with pytest.raises(TierSpecError, match=r"no tier 'staging' \(tiers: dev, prod\)"):
        layout.load_tier("staging")
