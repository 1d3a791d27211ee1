"""``gateway serve | proxy-config | status | warmup | deploy | bench | fixtures | keys``.

>>> gateway serve --port 8000            # embedded CPU tier serves `dev` if no URL is set
>>> gateway warmup --tier prod --wait    # progress against the ETA; non-zero past the deadline
>>> gateway keys create team-a --tiers dev,prod --rpm 60   # the key alone on the last line
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence

from gateway.settings import Settings, SettingsError, load_settings


def _settings(args: argparse.Namespace) -> Settings | None:
    """The settings ``--config`` names, or None after saying what is wrong with them."""
    try:
        return load_settings(args.config)
    except SettingsError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from gateway.ops.serving import serve

    if (settings := _settings(args)) is None:
        return 2
    if not settings.keys_on and not args.no_auth and not _loopback(args.host):
        print(
            f"gateway: refusing to serve {args.host} without API keys: anyone who reaches it "
            "could wake the GPU tiers. Set keys_file (GATEWAY_KEYS_FILE) or keys_store "
            "(GATEWAY_KEYS_STORE) and `gateway keys create`, or pass --no-auth to serve it open.",
            file=sys.stderr,
        )
        return 2
    return serve(settings, host=args.host, port=args.port, workers=args.workers)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _proxy_config(args: argparse.Namespace) -> int:
    from gateway.ops.front_proxy import render_nginx

    if (settings := _settings(args)) is None:
        return 2
    print(render_nginx(settings, listen=args.listen, upstream=args.upstream), end="")
    return 0


def _status(args: argparse.Namespace) -> int:
    from gateway.ops.client_cli import show_status

    return show_status(args.url, as_json=args.json, api_key=os.environ.get("GATEWAY_API_KEY"))


def _warmup(args: argparse.Namespace) -> int:
    from gateway.ops.client_cli import warm_up

    return warm_up(
        args.url,
        args.tier,
        wait=args.wait,
        timeout_s=args.timeout,
        api_key=os.environ.get("GATEWAY_API_KEY"),  # an admin key, when keys are on
    )


def _deploy(args: argparse.Namespace) -> int:
    try:
        from tiers.deploy import deploy
    except ImportError as exc:
        print(f"gateway deploy: the tiers package is not available ({exc})", file=sys.stderr)
        return 2
    return int(deploy(args.tier))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    default_url = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="gateway TOML file (default: $GATEWAY_CONFIG or config/)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--no-auth", action="store_true", help="serve a non-loopback --host without API keys"
    )
    serve.set_defaults(func=_serve)

    proxy = sub.add_parser(
        "proxy-config", help="print the nginx front proxy's configuration (the header limits)"
    )
    proxy.add_argument("--config", help="gateway TOML file (default: $GATEWAY_CONFIG or config/)")
    proxy.add_argument("--listen", default="0.0.0.0:80", help="where nginx listens")
    proxy.add_argument("--upstream", default="127.0.0.1:8000", help="where `gateway serve` is")
    proxy.set_defaults(func=_proxy_config)

    status = sub.add_parser("status", help="per-tier state of a running gateway")
    status.add_argument("--url", default=default_url, help="the gateway (default: $GATEWAY_URL)")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(func=_status)

    warmup = sub.add_parser("warmup", help="warm a tier up through a running gateway")
    warmup.add_argument("--tier", required=True)
    warmup.add_argument("--wait", action="store_true", help="wait, showing progress vs the ETA")
    warmup.add_argument("--timeout", type=float, default=None, help="seconds (default: cold)")
    warmup.add_argument("--url", default=default_url)
    warmup.set_defaults(func=_warmup)

    deploy = sub.add_parser("deploy", help="deploy the Modal tiers (needs `modal` and a token)")
    deploy.add_argument("--tier", choices=["dev", "prod", "all"], default="all")
    deploy.set_defaults(func=_deploy)

    # `fixtures`, `bench` and `keys`: their arguments live beside their code.
    from gateway.ops.bench import add_bench_parser
    from gateway.ops.keys_cli import add_keys_parser
    from gateway.testing.commands import add_fixtures_parser

    add_fixtures_parser(sub)
    add_bench_parser(sub)
    add_keys_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
