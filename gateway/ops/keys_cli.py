"""``gateway keys create | list | revoke``: the keys file and the shared key store, from a shell.

>>> gateway keys create team-a --tiers dev,prod --rpm 60 --gpu-seconds-per-day 3600
>>> gateway keys list
>>> gateway keys revoke team-a
>>> gateway keys --store state create ci --tiers dev     # into the state Redis, for every replica

``create`` prints the new key alone on the last line of its output, once (only its hash is
kept): ``KEY=$(gateway keys create ci --tiers dev | tail -n1)``.

Where the keys go: ``--file PATH`` and/or ``--store state|redis://…`` when given, else what
the configuration names (``keys_file`` / ``GATEWAY_KEYS_FILE``, ``keys_store`` /
``GATEWAY_KEYS_STORE``). With both a file and a store, ``create`` writes to the store (one
command for every replica) and refuses a name live in either; ``revoke`` revokes the name
wherever it is live; ``list`` shows both, each row saying where it lives. A running gateway
picks a change up without a restart: within ``RELOAD_EVERY_S`` from the file, within
``FOLLOW_EVERY_S`` from the store.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, Protocol

from gateway.access.keys import (
    KeyRecord,
    KeysFileError,
    add_key,
    hash_key,
    new_key,
    read_keys,
    revoke_key,
)
from gateway.access.shared_keys import SharedKeys
from gateway.settings import STATE_SCHEMES, Settings, SettingsError, load_settings
from gateway.shared_redis import StoreFailure

# An operator's command, perhaps across a VPN to the Redis: longer than a request may wait
# (state_timeout_s), short enough that a wrong address fails while they watch.
CLI_STORE_TIMEOUT_S = 5.0


class KeyPlace(Protocol):
    """Where keys are kept: the file or the shared store."""

    where: str  # for messages: the file's path, or "the shared key store" (never a URL)

    async def records(self) -> list[KeyRecord]: ...

    async def add(self, record: KeyRecord) -> None: ...

    async def revoke(self, name: str) -> None: ...

    async def aclose(self) -> None: ...


class FilePlace:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    async def records(self) -> list[KeyRecord]:
        return read_keys(self.path).keys

    async def add(self, record: KeyRecord) -> None:
        add_key(self.path, record)

    async def revoke(self, name: str) -> None:
        revoke_key(self.path, name)

    async def aclose(self) -> None:
        pass


class StorePlace:
    def __init__(self, store: SharedKeys) -> None:
        self.store = store
        self.where = f"the shared key store (Redis, prefix {store.prefix!r})"

    async def records(self) -> list[KeyRecord]:
        return await self.store.records()

    async def add(self, record: KeyRecord) -> None:
        await self.store.add(record)

    async def revoke(self, name: str) -> None:
        await self.store.revoke(name)

    async def aclose(self) -> None:
        await self.store.aclose()


def _settings(args: argparse.Namespace) -> Settings | None:
    """The configuration, or None when it cannot be read (``--file`` alone needs none)."""
    try:
        return load_settings(args.config)
    except SettingsError as exc:
        args.settings_error = exc
        return None


def _places(args: argparse.Namespace, settings: Settings | None) -> list[KeyPlace]:
    """The file and/or store the command works on; KeysFileError naming what is missing."""
    places: list[KeyPlace] = []
    explicit = args.file is not None or args.store is not None
    path = Path(args.file) if args.file else None
    url = args.store
    if not explicit:
        if settings is None:
            raise KeysFileError(f"configuration error: {args.settings_error}")
        path = settings.keys_file
        url = settings.keys_store.reveal() if settings.keys_store is not None else None
    if url == "state":
        if settings is None or settings.state is None:
            raise KeysFileError("--store state: no state (GATEWAY_STATE) Redis is configured")
        url = settings.state.reveal()
    if url is not None and url.split("://", 1)[0] not in STATE_SCHEMES:
        # the value itself is not shown: a Redis URL may carry a password
        raise KeysFileError(f"--store: not 'state' or a {'://, '.join(STATE_SCHEMES)}:// URL")
    if path is not None:
        places.append(FilePlace(path))
    if url is not None:
        if settings is None:  # the store's keys are under the config's state_prefix
            raise KeysFileError(f"--store needs the configuration: {args.settings_error}")
        store = SharedKeys(url, prefix=settings.state_prefix, timeout_s=CLI_STORE_TIMEOUT_S)
        places.append(StorePlace(store))
    if not places:
        raise KeysFileError(
            "no keys file or key store: set keys_file (GATEWAY_KEYS_FILE) or keys_store "
            "(GATEWAY_KEYS_STORE) in the config, or pass --file or --store"
        )
    return places


async def _create(args: argparse.Namespace, places: list[KeyPlace], known: list[str] | None) -> int:
    tiers = tuple(t.strip() for t in args.tiers.split(",") if t.strip())
    if not tiers:
        print("gateway keys create: --tiers names no tier", file=sys.stderr)
        return 2
    unknown = [t for t in tiers if known is not None and t not in known]
    if unknown:
        print(
            f"gateway keys create: --tiers: no tier named {', '.join(unknown)}; "
            f"valid: {', '.join(known or ())}",
            file=sys.stderr,
        )
        return 2
    *others, target = places  # the store when there is one: every replica follows it
    for place in others:
        if any(k.name == args.name and not k.revoked for k in await place.records()):
            raise KeysFileError(
                f"a key named {args.name!r} exists in {place.where}; revoke it first"
            )
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
    await target.add(record)
    print(f"key {args.name!r} ({record.role}; tiers {', '.join(tiers)}) added to {target.where}.")
    print("It is shown once, now; only its hash is kept:")
    print(key)
    return 0


async def _list(args: argparse.Namespace, places: list[KeyPlace], known: list[str] | None) -> int:
    print(
        f"{'name':<20} {'role':<7} {'tiers':<16} {'rpm':>6} {'tpm':>8} {'gpu-s/day':>9}  "
        f"{'state':<7}  in"
    )
    for place in places:
        where = "store" if isinstance(place, StorePlace) else "file"
        for k in await place.records():
            print(
                f"{k.name:<20} {k.role:<7} {','.join(k.tiers):<16} {k.rpm or '-':>6} "
                f"{k.tpm or '-':>8} {k.gpu_seconds_per_day or '-':>9}  "
                f"{'revoked' if k.revoked else 'live':<7}  {where}"
            )
    return 0


async def _revoke(args: argparse.Namespace, places: list[KeyPlace], known: list[str] | None) -> int:
    revoked = []
    for place in places:  # wherever the name is live: a revocation anywhere wins
        if any(k.name == args.name and not k.revoked for k in await place.records()):
            await place.revoke(args.name)
            revoked.append(place.where)
    if not revoked:
        raise KeysFileError(
            f"no live key named {args.name!r} in {' or '.join(p.where for p in places)}"
        )
    print(f"key {args.name!r} revoked in {' and '.join(revoked)}")
    return 0


async def _act(args: argparse.Namespace, places: list[KeyPlace], known: list[str] | None) -> int:
    try:
        code: int = await args.action(args, places, known)
        return code
    finally:
        for place in places:
            await place.aclose()


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    known = list(settings.tiers) if settings is not None else None
    try:
        places = _places(args, settings)
        return asyncio.run(_act(args, places, known))
    except KeysFileError as exc:
        print(f"gateway keys: {exc}", file=sys.stderr)
        return 1
    except StoreFailure as exc:
        # the class, never the text: it may hold the URL (and its password)
        print(f"gateway keys: the key store did not answer ({type(exc).__name__})", file=sys.stderr)
        return 1


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def add_keys_parser(sub: Any) -> None:
    """Add ``keys`` to the ``gateway`` command's subparsers."""
    keys = sub.add_parser("keys", help="create, list or revoke API keys")
    keys.add_argument("--config", help="gateway TOML file naming keys_file / keys_store")
    keys.add_argument("--file", help="the keys file (default: keys_file of the config)")
    keys.add_argument(
        "--store",
        help="the shared key store: 'state' (the config's state Redis) or a redis:// URL "
        "(default: keys_store of the config)",
    )
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
