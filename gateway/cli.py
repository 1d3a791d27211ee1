"""``gateway serve | proxy-config | status | warmup | deploy | bench | fixtures``.

>>> gateway serve --port 8000            # embedded CPU tier serves `dev` if no URL is set
>>> gateway warmup --tier prod --wait    # progress against the ETA; non-zero past the deadline
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway.settings import SettingsError, load_settings


def _serve(args: argparse.Namespace) -> int:
    from gateway.serving import serve

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    return serve(settings, host=args.host, port=args.port, workers=args.workers)


def _proxy_config(args: argparse.Namespace) -> int:
    from gateway.front_proxy import render_nginx

    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    print(render_nginx(settings, listen=args.listen, upstream=args.upstream), end="")
    return 0


def _status(args: argparse.Namespace) -> int:
    from gateway.client_cli import show_status

    return show_status(args.url, as_json=args.json)


def _warmup(args: argparse.Namespace) -> int:
    from gateway.client_cli import warm_up

    return warm_up(args.url, args.tier, wait=args.wait, timeout_s=args.timeout)


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

    # `fixtures` and `bench`: their arguments live beside their code.
    from gateway.suite import add_bench_parser
    from gateway.testing.commands import add_fixtures_parser

    add_fixtures_parser(sub)
    add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
