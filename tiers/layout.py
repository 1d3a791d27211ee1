"""Names and paths of the Modal deployment, shared by ``modal_app`` (inside and outside the
container), ``deploy`` and ``serve``. Pure: importing it never imports modal.

>>> app_name("dev"), endpoint_label("dev")
('tier-gateway-dev', 'tier-gateway-dev')
"""

from __future__ import annotations

from pathlib import Path

from gateway.tierspec import TierSpec, TierSpecError, load_tier_specs

# The repository root locally; /root inside a Modal container, where modal_app adds the
# tiers file at the same relative place (config/tiers.toml beside tiers/).
ROOT = Path(__file__).resolve().parent.parent
TIERS_FILE = ROOT / "config" / "tiers.toml"
CONTAINER_TIERS_FILE = "/root/config/tiers.toml"

# Which tier `modal deploy -m tiers.modal_app` builds. Set by tiers.deploy, and baked into the
# image so the container's re-import of modal_app builds the same tier.
TIER_ENV_VAR = "TIERS_MODAL_TIER"
# Another tiers file for a deploy (`deploy(config=...)` sets it). Read only outside the
# container: the image holds whichever file was deployed, at CONTAINER_TIERS_FILE.
CONFIG_ENV_VAR = "TIERS_MODAL_CONFIG"

FUNCTION_NAME = "serve"  # the web_server function (or class) in each tier's app
DOWNLOAD_FUNCTION_NAME = "download_weights"  # CPU-only: fills the weights Volume
SNAPSHOT_CLASS_NAME = "SnapshotServer"  # the experimental GPU-snapshot variant

# Volumes: weights are shared (keyed by model and revision inside the HF cache); the compile
# cache is per tier so two tiers never commit the same files at once.
HF_CACHE_VOLUME = "tier-gateway-hf-cache"
HF_CACHE_PATH = "/cache/huggingface"
VLLM_CACHE_PATH = "/cache/vllm"


def app_name(tier: str) -> str:
    return f"tier-gateway-{tier}"


def endpoint_label(tier: str) -> str:
    """Modal's URL label: the endpoint is https://<workspace>--<label>.modal.run."""
    return f"tier-gateway-{tier}"


def vllm_cache_volume(tier: str) -> str:
    return f"tier-gateway-{tier}-vllm-cache"


def load_tier(tier: str, path: Path = TIERS_FILE) -> TierSpec:
    specs = load_tier_specs(path)
    try:
        return specs[tier]
    except KeyError:
        raise TierSpecError(
            f"{path}: no tier {tier!r} (tiers: {', '.join(sorted(specs)) or 'none'})"
        ) from None
