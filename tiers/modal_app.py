"""Modal deployment of one GPU tier: vLLM + XGrammar behind a proxy-authenticated URL.

Deploy through ``gateway deploy --tier dev`` (``tiers.deploy``), which runs::

    TIERS_MODAL_TIER=dev modal deploy -m tiers.modal_app

Every setting comes from ``config/tiers.toml``; the tier's name comes from the environment
variable, which is also baked into the image so the container's re-import of this module
builds the same tier. Each tier is its own Modal App (``tier-gateway-<tier>``), so deploying
dev never restarts prod.

What each piece is for (docs/tiers.md has the numbers):

* ``requires_proxy_auth=True``: a request without Modal-Key/Modal-Secret headers is refused
  at Modal's edge and never starts a GPU container.
* Volumes: the Hugging Face cache (weights are downloaded once) and ``VLLM_CACHE_ROOT``
  (torch.compile's artefacts: the 156 s compile of the first boot is a cache load after).
* ``@modal.web_server(startup_timeout=...)``: vLLM opens its port only once the engine is
  ready, so the startup timeout must cover a whole cold boot (Modal's default is 5 s).
* ``@modal.concurrent(max_inputs=...)``: vLLM batches; one container takes
  ``max_concurrency`` requests before Modal starts another.
* ``gpu_snapshot = true`` (EXPERIMENTAL, off by default): a GPU memory snapshot taken with
  vLLM asleep; restores skip weights, init, compile and graph capture.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import modal

from gateway.tierspec import TierSpec
from tiers import layout
from tiers.vllm_command import check_pinned, vllm_command


def selected_tier() -> str:
    tier = os.environ.get(layout.TIER_ENV_VAR, "")
    if not tier:
        raise RuntimeError(
            f"set {layout.TIER_ENV_VAR}=<tier> (e.g. dev) before `modal deploy -m tiers.modal_app`,"
            " or run `gateway deploy --tier dev`"
        )
    return tier


def image_env(tier: str, spec: TierSpec) -> dict[str, str]:
    env = {
        layout.TIER_ENV_VAR: tier,
        "HF_HUB_CACHE": layout.HF_CACHE_PATH,
        "VLLM_CACHE_ROOT": layout.VLLM_CACHE_PATH,
        "HF_XET_HIGH_PERFORMANCE": "1",  # saturate the link on the one download of weights
    }
    if spec.gpu_snapshot:
        # /sleep and /wake_up exist only in vLLM's dev mode. They are reachable through the
        # URL too, behind proxy auth: one more reason the snapshot path stays opt-in.
        env["VLLM_SERVER_DEV_MODE"] = "1"
    return env


def function_settings(spec: TierSpec) -> dict[str, Any]:
    """The scalar settings of ``@app.function``/``@app.cls``, straight from the tier."""
    return {
        "gpu": spec.gpu,
        "timeout": int(spec.request_timeout_s),  # Modal's per-request (input) limit
        "startup_timeout": int(spec.startup_timeout_s),  # container start, vLLM boot included
        "scaledown_window": int(spec.scaledown_window_s),
        "min_containers": spec.min_containers,
        "max_containers": spec.max_containers,
        "include_source": False,  # the sources it needs are added to the image explicitly
    }


def web_server_settings(tier: str, spec: TierSpec) -> dict[str, Any]:
    return {
        "port": spec.port,
        "startup_timeout": spec.startup_timeout_s,
        "requires_proxy_auth": True,
        "label": layout.endpoint_label(tier),
    }


def _container_source(path: Path) -> bool:
    """Ignore-filter for the sources added to the image: only what this module imports."""
    wanted = {
        "__init__.py",
        "tierspec.py",
        "layout.py",
        "vllm_command.py",
        "modal_app.py",
        "snapshot.py",
    }
    # modal passes paths relative to the package directory: subpackages (gateway/routes,
    # tiers/local) have more than one part and are never shipped.
    return len(path.parts) != 1 or path.name not in wanted


def tiers_file() -> Path:
    return Path(os.environ.get(layout.CONFIG_ENV_VAR) or layout.TIERS_FILE)


def build_image(tier: str, spec: TierSpec, config: Path) -> modal.Image:
    return (
        modal.Image.debian_slim(python_version="3.12")
        # Both pinned: vLLM pins the XGrammar it was tested with, so a mismatched pair in
        # tiers.toml fails here, at build time, instead of drifting.
        .uv_pip_install(f"vllm=={spec.vllm_version}", f"xgrammar=={spec.xgrammar_version}")
        .env(image_env(tier, spec))
        .add_local_file(config, layout.CONTAINER_TIERS_FILE)
        .add_local_python_source("gateway", "tiers", ignore=_container_source)
    )


def volumes(tier: str) -> dict[str, modal.Volume]:
    return {
        layout.HF_CACHE_PATH: modal.Volume.from_name(
            layout.HF_CACHE_VOLUME, create_if_missing=True
        ),
        layout.VLLM_CACHE_PATH: modal.Volume.from_name(
            layout.vllm_cache_volume(tier), create_if_missing=True
        ),
    }


TIER = selected_tier()
TIERS_FILE = tiers_file()
SPEC = layout.load_tier(TIER, TIERS_FILE)
check_pinned(TIER, SPEC)
COMMAND = vllm_command(SPEC, sleep_mode=SPEC.gpu_snapshot)

app = modal.App(layout.app_name(TIER))
IMAGE = build_image(TIER, SPEC, TIERS_FILE)
VOLUMES = volumes(TIER)
_options: dict[str, Any] = {"image": IMAGE, "volumes": VOLUMES, **function_settings(SPEC)}

# The prod weights are ~61 GiB: downloading them inside the first GPU boot would spend A100
# time on the network and can outlast the startup timeout. tiers.deploy runs this first.
DOWNLOAD_TIMEOUT_S = 3600


@app.function(
    image=IMAGE,
    volumes={layout.HF_CACHE_PATH: VOLUMES[layout.HF_CACHE_PATH]},
    timeout=DOWNLOAD_TIMEOUT_S,
    include_source=False,
)
def download_weights() -> str:
    """Fetch the tier's pinned snapshot into the weights Volume (no GPU); idempotent."""
    from huggingface_hub import snapshot_download  # in the image, with vLLM

    path = snapshot_download(SPEC.model, revision=SPEC.revision)
    VOLUMES[layout.HF_CACHE_PATH].commit()  # visible to GPU containers now, not at exit
    return str(path)


if not SPEC.gpu_snapshot:

    @app.function(**_options)
    @modal.concurrent(max_inputs=SPEC.max_concurrency)
    @modal.web_server(**web_server_settings(TIER, SPEC))
    def serve() -> None:
        # Returns at once; Modal routes traffic once the port accepts connections, which vLLM
        # does only after the engine (weights, compile, graphs) is ready.
        subprocess.Popen(COMMAND)  # noqa: S603 - argv from config, no shell

else:
    from tiers.snapshot import SnapshotLifecycle

    @app.cls(
        **_options,
        enable_memory_snapshot=True,
        experimental_options={"enable_gpu_snapshot": True},
    )
    @modal.concurrent(max_inputs=SPEC.max_concurrency)
    class SnapshotServer(SnapshotLifecycle):
        """EXPERIMENTAL. Boots vLLM, warms it, puts it to sleep, and is snapshotted there."""

        @modal.enter(snap=True)
        def boot(self) -> None:
            self.start(COMMAND, SPEC, ready_timeout_s=SPEC.startup_timeout_s)

        @modal.enter(snap=False)
        def restore(self) -> None:
            self.wake(SPEC)

        @modal.exit()
        def stop(self) -> None:
            self.terminate()

        @modal.web_server(**web_server_settings(TIER, SPEC))
        def serve(self) -> None:
            """vLLM is already listening: started (or restored) by the enter hooks."""
