"""``gateway keys create | list | revoke``: the keys file, from a shell.

>>> gateway keys create team-a --tiers dev,prod --rpm 60 --gpu-seconds-per-day 3600
>>> gateway keys list
>>> gateway keys revoke team-a

``create`` prints the new key alone on the last line of its output, once (only its hash is
kept): ``KEY=$(gateway keys create ci --tiers dev | tail -n1)``. A running gateway picks up
a created or revoked key within ``RELOAD_EVERY_S``, without a restart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.access.keys import (
    KeyRecord,
    KeysFileError,
    add_key,
    hash_key,
    new_key,
    read_keys,
    revoke_key,
)
from gateway.settings import SettingsError, load_settings


def _keys_file(args: argparse.Namespace) -> Path | None:
    if args.file:
        return Path(args.file)
    try:
        return load_settings(args.config).keys_file
    except SettingsError as exc:
        print(f"gateway keys: configuration error: {exc}", file=sys.stderr)
        return None


def _known_tiers(args: argparse.Namespace) -> list[str] | None:
    """The configured tiers, or None when no configuration can be read (``--file`` alone)."""
    try:
        return list(load_settings(args.config).tiers)
    except SettingsError:
        return None


def _create(args: argparse.Namespace, path: Path) -> int:
    tiers = tuple(t.strip() for t in args.tiers.split(",") if t.strip())
    if not tiers:
        print("gateway keys create: --tiers names no tier", file=sys.stderr)
        return 2
    known = _known_tiers(args)
    unknown = [t for t in tiers if known is not None and t not in known]
    if unknown:
        print(
            f"gateway keys create: --tiers: no tier named {', '.join(unknown)}; "
            f"valid: {', '.join(known or ())}",
            file=sys.stderr,
        )
        return 2
    key = new_key()
    record = KeyRecord(
        name=args.name,
        hash=hash_key(key),
        tiers=tiers,
        role="admin" if args.admin else "client",
        rpm=args.rpm,
        tpm=args.tpm,
        gpu_seconds_per_day=args.gpu_seconds_per_day,
    )
    add_key(path, record)
    print(f"key {args.name!r} ({record.role}; tiers {', '.join(tiers)}) added to {path}.")
    print("It is shown once, now; only its hash is kept:")
    print(key)
    return 0


def _list(args: argparse.Namespace, path: Path) -> int:
    rows = read_keys(path).keys
    print(f"{'name':<20} {'role':<7} {'tiers':<16} {'rpm':>6} {'tpm':>8} {'gpu-s/day':>9}  state")
    for k in rows:
        print(
            f"{k.name:<20} {k.role:<7} {','.join(k.tiers):<16} {k.rpm or '-':>6} "
            f"{k.tpm or '-':>8} {k.gpu_seconds_per_day or '-':>9}  "
            f"{'revoked' if k.revoked else 'live'}"
        )
    return 0


def _revoke(args: argparse.Namespace, path: Path) -> int:
    revoke_key(path, args.name)
    print(f"key {args.name!r} revoked in {path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    path = _keys_file(args)
    if path is None:
        if args.file is None:
            print(
                "gateway keys: no keys file: set keys_file in the config or GATEWAY_KEYS_FILE, "
                "or pass --file",
                file=sys.stderr,
            )
        return 2
    try:
        code: int = args.action(args, path)
    except KeysFileError as exc:
        print(f"gateway keys: {exc}", file=sys.stderr)
        return 1
    return code


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def add_keys_parser(sub: Any) -> None:
    """Add ``keys`` to the ``gateway`` command's subparsers."""
    keys = sub.add_parser("keys", help="create, list or revoke API keys")
    keys.add_argument("--config", help="gateway TOML file naming keys_file")
    keys.add_argument("--file", help="the keys file (default: keys_file of the config)")
    verbs = keys.add_subparsers(dest="verb", required=True)

    create = verbs.add_parser("create", help="add a key; prints it, alone, on the last line")
    create.add_argument("name")
    create.add_argument("--tiers", required=True, help="comma-separated: dev,prod")
    create.add_argument("--rpm", type=_positive, help="requests per minute")
    create.add_argument("--tpm", type=_positive, help="tokens per minute")
    create.add_argument("--gpu-seconds-per-day", type=_positive, help="estimated GPU-seconds")
    create.add_argument("--admin", action="store_true", help="may warm up, read /status, /metrics")
    create.set_defaults(action=_create)

    listing = verbs.add_parser("list", help="names, roles, tiers and limits (never a key)")
    listing.set_defaults(action=_list)

    revoke = verbs.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("name")
    revoke.set_defaults(action=_revoke)
    keys.set_defaults(func=_run)
