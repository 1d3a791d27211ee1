"""``gateway deploy --tier dev|prod|all`` and a doctor, around the ``modal`` CLI.

>>> deploy("dev")  # doctest: +SKIP
deploying dev: modal deploy -m tiers.modal_app (TIERS_MODAL_TIER=dev)
...
GATEWAY_TIER_DEV_URL=https://<workspace>--tier-gateway-dev.modal.run

Both return a process exit status and print; a missing modal package or token is a
sentence and status 2, never a traceback. modal is imported lazily, inside functions: the
gateway imports this module without it.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from gateway.tierspec import TierSpec, TierSpecError, load_tier_specs, tier_env_var
from tiers import layout
from tiers.vllm_command import UnpinnedRevision, check_pinned, vllm_command

# (argv, env, cwd) -> exit status. Tests pass their own; the default runs the modal CLI.
Runner = Callable[[list[str], Mapping[str, str], Path], int]
# tier -> web URL, or raises. The default asks Modal (needs credentials).
UrlLookup = Callable[[str, TierSpec], str]
# tier -> where the weights landed, or raises. The default runs the deployed download function.
Prefetch = Callable[[str, TierSpec], str]

INSTALL_HINT = "pip install 'tier-gateway[modal]' (modal>=1.6,<2)"
TOKEN_HINT = "run `modal token new`, or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET"  # noqa: S105 - a hint, not a secret


def _run(argv: list[str], env: Mapping[str, str], cwd: Path) -> int:
    return subprocess.run(argv, env=dict(env), cwd=cwd, check=False).returncode  # noqa: S603


def modal_cli() -> list[str] | None:
    """How to invoke the modal CLI here, or None when it is not installed."""
    if importlib.util.find_spec("modal") is not None:
        return [sys.executable, "-m", "modal"]
    found = shutil.which("modal")
    return [found] if found else None


def has_token(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("MODAL_TOKEN_ID") and env.get("MODAL_TOKEN_SECRET"):
        return True
    try:
        from modal.config import config  # optional dependency: imported only here
    except ImportError:
        return False
    return bool(config.get("token_id") and config.get("token_secret"))


def modal_web_url(tier: str, spec: TierSpec) -> str:
    import modal  # optional dependency: imported only here

    name = layout.app_name(tier)
    if spec.gpu_snapshot:
        cls: Any = modal.Cls.from_name(name, layout.SNAPSHOT_CLASS_NAME)
        return str(cls().serve.get_web_url())
    return str(modal.Function.from_name(name, layout.FUNCTION_NAME).get_web_url())


def modal_prefetch(tier: str, spec: TierSpec) -> str:
    import modal  # optional dependency: imported only here

    function = modal.Function.from_name(layout.app_name(tier), layout.DOWNLOAD_FUNCTION_NAME)
    return str(function.remote())


def _select(tier: str, config: Path, err: TextIO) -> dict[str, TierSpec] | None:
    try:
        specs = load_tier_specs(config)
    except TierSpecError as exc:
        print(f"deploy: {exc}", file=err)
        return None
    names = sorted(specs) if tier == "all" else [tier]
    selected: dict[str, TierSpec] = {}
    for name in names:
        if name not in specs:
            known = ", ".join(sorted(specs))
            print(f"deploy: {config}: no tier {name!r} (tiers: {known})", file=err)
            return None
        try:
            check_pinned(name, specs[name])
        except UnpinnedRevision as exc:
            print(f"deploy: {exc}", file=err)
            return None
        selected[name] = specs[name]
    return selected


def deploy(
    tier: str,
    *,
    config: Path = layout.TIERS_FILE,
    run: Runner = _run,
    lookup_url: UrlLookup = modal_web_url,
    prefetch: Prefetch | None = modal_prefetch,
    environ: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Deploy one tier, or ``all``; print the gateway settings that point at them.

    After each deploy the tier's weights are fetched into the Volume by a CPU-only function
    (``prefetch=None`` skips it), so the first GPU boot reads them instead of downloading.
    """
    env = dict(os.environ if environ is None else environ)
    selected = _select(tier, config, err)
    if selected is None:
        return 2
    cli = modal_cli()
    if cli is None:
        print(f"deploy: the modal CLI is not installed: {INSTALL_HINT}", file=err)
        return 2
    if not has_token(env):
        print(f"deploy: no Modal token found: {TOKEN_HINT}", file=err)
        return 2
    urls: dict[str, str] = {}
    for name, spec in selected.items():
        argv = [*cli, "deploy", "-m", "tiers.modal_app"]
        print(
            f"deploying {name}: {shlex.join(argv[len(cli) - 1 :])} ({layout.TIER_ENV_VAR}={name})",
            file=out,
            flush=True,
        )
        print(f"  vLLM: {shlex.join(vllm_command(spec))}", file=out, flush=True)
        status = run(
            argv,
            {**env, layout.TIER_ENV_VAR: name, layout.CONFIG_ENV_VAR: str(config.resolve())},
            layout.ROOT,
        )
        if status != 0:
            print(f"deploy: `modal deploy` failed for {name} (exit {status})", file=err)
            return status
        if prefetch is not None:
            print(
                f"  fetching {spec.model}@{spec.revision[:12]} into the weights Volume "
                "(CPU only; minutes the first time)",
                file=out,
                flush=True,
            )
            try:
                print(f"  weights at {prefetch(name, spec)}", file=out, flush=True)
            except Exception as exc:  # noqa: BLE001 - the deploy stands; the boot will download
                print(
                    f"deploy: {name}: weights prefetch failed ({exc}); the first boot will "
                    "download them instead",
                    file=err,
                )
        try:
            urls[name] = lookup_url(name, spec)
        except Exception as exc:  # noqa: BLE001 - deployed; only the URL look-up failed
            print(
                f"deploy: {name} is deployed but its URL look-up failed ({exc}); "
                f"find it with `modal app list`",
                file=err,
            )
    print("\n# gateway settings (environment or config/gateway.toml):", file=out)
    for name, url in urls.items():
        print(f"{tier_env_var(name, 'URL')}={url}", file=out)
    print(
        "# and a Modal proxy auth token (dashboard: Settings > Proxy Auth Tokens):\n"
        "GATEWAY_MODAL_KEY=wk-...\nGATEWAY_MODAL_SECRET=ws-...",
        file=out,
    )
    return 0


def compare(spec: TierSpec, info: Any) -> list[str]:
    """Differences between a tier's config and a modal ``FunctionInfo`` (deployed or built)."""
    found: list[tuple[str, object, object]] = [
        ("gpu", [g for g, _ in info.gpus], [spec.gpu]),
        ("startup_timeout", info.startup_timeout, int(spec.startup_timeout_s)),
        ("timeout", info.timeout, int(spec.request_timeout_s)),
        (
            "max concurrent inputs",
            info.concurrency_info.max_inputs if info.concurrency_info else None,
            spec.max_concurrency,
        ),
        ("proxy auth required", not info.web_info.unauthenticated if info.web_info else None, True),
    ]
    return [
        f"{what}: deployed {got!r}, config {want!r}" for what, got, want in found if got != want
    ]


def compare_autoscaler(spec: TierSpec, settings: Any) -> list[str]:
    """Differences in the autoscaler (``FunctionAutoscalerSettings``), which Modal lets anyone
    change at run time (``update_autoscaler``) without a deploy: reported, not failed."""
    found: list[tuple[str, object, object]] = [
        ("min_containers", settings.min_containers or 0, spec.min_containers),
        ("max_containers", settings.max_containers, spec.max_containers),
        ("scaledown_window", settings.scaledown_window, int(spec.scaledown_window_s)),
    ]
    return [f"{what}: live {got!r}, config {want!r}" for what, got, want in found if got != want]


def doctor(
    *,
    config: Path = layout.TIERS_FILE,
    environ: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Check the tiers file, then (where credentials exist) the deployed functions against it."""
    env = dict(os.environ if environ is None else environ)
    try:
        specs = load_tier_specs(config)
    except TierSpecError as exc:
        print(f"doctor: {exc}", file=out)
        return 1
    status = 0
    for name, spec in sorted(specs.items()):
        try:
            check_pinned(name, spec)
        except UnpinnedRevision as exc:
            print(f"{name}: {exc}", file=out)
            status = 1
            continue
        print(
            f"{name}: config ok: {spec.model}@{spec.revision[:12]} on {spec.gpu}, "
            f"vLLM {spec.vllm_version} + XGrammar {spec.xgrammar_version}",
            file=out,
        )
    if modal_cli() is None:
        print(
            f"doctor: could not check deployments: modal is not installed ({INSTALL_HINT})",
            file=out,
        )
        return status
    if not has_token(env):
        print(f"doctor: could not check deployments: no Modal token ({TOKEN_HINT})", file=out)
        return status
    for name, spec in sorted(specs.items()):
        status = max(status, _check_deployed(name, spec, out))
    return status


def _check_deployed(name: str, spec: TierSpec, out: TextIO) -> int:
    import modal  # optional dependency: imported only here

    if spec.gpu_snapshot:
        print(f"{name}: experimental snapshot class: settings not checked", file=out)
        return 0
    app = layout.app_name(name)
    try:
        function = modal.Function.from_name(app, layout.FUNCTION_NAME)
        function.hydrate()
        info = function.info()
        stats = function.get_current_stats()
        autoscaler = function.autoscaler.settings()
    except modal.exception.NotFoundError:
        print(
            f"{name}: not deployed (no app {app!r}); run `gateway deploy --tier {name}`", file=out
        )
        return 1
    except modal.exception.Error as exc:
        print(f"{name}: could not check the deployment ({exc})", file=out)
        return 1
    problems = compare(spec, info)
    for problem in problems:
        print(f"{name}: {problem}; redeploy with `gateway deploy --tier {name}`", file=out)
    for note in compare_autoscaler(spec, autoscaler):
        print(f"{name}: note: {note} (changed at run time, or deployed from elsewhere)", file=out)
    print(
        f"{name}: {stats.num_total_runners} container(s) running, backlog {stats.backlog} "
        f"(checked without waking it)",
        file=out,
    )
    return 1 if problems else 0
