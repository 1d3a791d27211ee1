"""The GPU tiers as ``config/tiers.toml`` describes them: one source of truth read by the
gateway (warmth defaults, model names) and by ``tiers/`` (the deployments themselves).

>>> specs = load_tier_specs(Path("config/tiers.toml"))
>>> specs["prod"].expected_cold_start_s
424.0
>>> tier_env_var("prod", "URL")
'GATEWAY_TIER_PROD_URL'

Pure data and a loader: importing this module pulls in nothing heavier than msgspec. It is
also shipped into the Modal containers (``tiers/modal_app.py`` re-imports it there), so it
must stay free of other ``gateway`` imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

Gpu = Literal["L40S", "A100-80GB", "A100-40GB", "H100", "H200", "L4", "A10G", "T4"]

# Modal accepts a scale-down window of 2..3600 s; a value outside fails at deploy, so it
# fails here instead, where the file and key are named.
ScaledownWindow = Annotated[float, msgspec.Meta(ge=2, le=3600)]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class TierSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One tier's deployment. Field comments live in config/tiers.toml beside the values."""

    model: str
    revision: str
    served_model_name: str
    gpu: Gpu
    vllm_version: str
    xgrammar_version: str
    max_model_len: Count
    gpu_memory_utilization: Fraction
    max_concurrency: Count
    scaledown_window_s: ScaledownWindow
    min_containers: Annotated[int, msgspec.Meta(ge=0)] = 0
    max_containers: Count | None = None  # None: Modal's own limit (the workspace's GPU quota)
    startup_timeout_s: Positive
    request_timeout_s: Positive = 600.0
    fast_boot: bool = False
    gpu_snapshot: bool = False
    expected_cold_start_s: Positive
    port: Port = 8000
    gpu_usd_per_hour: Positive | None = None  # what one GPU of ``gpu`` costs (per-key spend)


class TiersFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tiers: dict[str, TierSpec]


# The per-tier settings the environment may give the gateway (docs/configuration.md).
TierEnvSetting = Literal["URL", "KIND"]


def tier_env_var(tier: str, setting: TierEnvSetting) -> str:
    """The environment variable that gives a tier one of its gateway settings. Built only
    here: the gateway reads it, its messages and ``/status`` name it, and ``tiers.deploy``
    prints it, so the name a user is told is always the name that is read."""
    return f"GATEWAY_TIER_{tier.upper()}_{setting}"


class TierSpecError(ValueError):
    """The tiers file is missing or wrong; the message names the file and the key."""


def load_tier_specs(path: Path) -> dict[str, TierSpec]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TierSpecError(f"{path}: cannot read the tiers file ({exc.strerror})") from exc
    try:
        return msgspec.toml.decode(raw, type=TiersFile).tiers
    except msgspec.ValidationError as exc:
        raise TierSpecError(f"{path}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise TierSpecError(f"{path}: not valid TOML ({exc})") from exc
