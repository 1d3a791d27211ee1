"""API keys in Redis: one set of keys for every replica, changed by one ``gateway keys``.

>>> store = SharedKeys("redis://redis:6379/0", prefix="team-a", timeout_s=5.0)
>>> await store.add(KeyRecord(name="ci", hash=hash_key(key), tiers=("dev",)))
>>> await store.revoke("ci")
>>> follower = KeyFollower(store, key_store)    # in each gateway: keeps key_store current
>>> await follower.sync()                       # at start; then every FOLLOW_EVERY_S

Layout, under the deployment's ``state_prefix`` (as the warmth store's keys):

- ``<prefix>:keys``: a Redis hash, field = the key's SHA-256, value = its
  :class:`~gateway.access.keys.KeyRecord` as JSON: the same record the keys file holds, so
  never the key itself. A revoked key stays, marked ``revoked``: ``list`` shows it, and a
  revocation here wins over the same key live in a keys file.
- ``<prefix>:keys:version``: a random token every change replaces, in the same MULTI/EXEC as
  the change, so a reader that sees a new version reads a set that has it. Random, not a
  counter: a Redis restarted empty starts counting again, and its first change would carry
  a number a follower has already seen.

Each gateway process follows the store (:class:`KeyFollower`): every ``FOLLOW_EVERY_S`` one
``GET`` of the version, and only when it moved one ``HGETALL``; the records then replace the
shared half of the process's :class:`~gateway.access.keys.KeyStore`. A request never waits
on Redis: its lookup stays one hash and one dict access in memory.

Redis down or slow: each call is bounded by the timeout, the process keeps the keys it last
read (nobody is let in who was not, nobody who was is locked out by a blip), logs once that
it did, and rejoins at the first answer. A follower that never reached Redis has the keys
file's keys only, until it does.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import cast

import msgspec
from redis.exceptions import WatchError

from gateway.access.keys import KeyRecord, KeysFileError, KeyStore
from gateway.clock import Clock, SystemClock
from gateway.shared_redis import StoreFailure, bounded_redis

__all__ = ["FOLLOW_EVERY_S", "KeyFollower", "SharedKeys"]
log = logging.getLogger("gateway.access.shared_keys")

# A revoked key stops working on every replica within this. The cost is one GET of a small
# counter per process each time: 2 commands a second, 200/s for 100 processes, where one
# Redis serves ~100,000/s. Pub/sub would be faster still, but a subscription lost in an
# outage must be noticed and renewed, and missed messages re-read: the counter needs neither.
FOLLOW_EVERY_S = 0.5
VERSION_BYTES = 8  # 64 random bits: two changes never share a token
# Two operators creating keys at once conflict once; 16 conflicts in a row is a loop.
MAX_WATCH_RETRIES = 16
# What a failed Redis call may raise: its own errors, OSError from the socket, our timeout.
# A change to the store: every record in it (revoked ones too) in, the one record to write out.
_Change = Callable[[list[KeyRecord]], KeyRecord]


class SharedKeys:
    """The keys in one Redis, under one prefix: what ``gateway keys`` writes and the
    gateways follow. Every method is one bounded round trip (or one transaction)."""

    def __init__(self, url: str, *, prefix: str, timeout_s: float) -> None:
        self._redis = bounded_redis(url, timeout_s)
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.hash_key = f"{prefix}:keys"
        self.version_key = f"{prefix}:keys:version"

    def __repr__(self) -> str:  # never the URL: it may hold a password
        return f"SharedKeys(prefix={self.prefix!r})"

    async def version(self) -> bytes | None:
        """The current version token; None for a store never written (or emptied)."""
        async with asyncio.timeout(self.timeout_s):
            raw: bytes | None = await self._redis.get(self.version_key)
        return raw

    async def snapshot(self) -> tuple[bytes | None, list[KeyRecord]]:
        """The version and every record (revoked ones too), read in one transaction."""
        async with asyncio.timeout(self.timeout_s), self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self.version_key)
            pipe.hgetall(self.hash_key)
            version, raw_records = await pipe.execute()
        return version, _decode_all(raw_records)

    async def records(self) -> list[KeyRecord]:
        return (await self.snapshot())[1]

    async def add(self, record: KeyRecord) -> None:
        """Add a key; KeysFileError if a live key has its name (rotation: revoke first)."""

        def change(records: list[KeyRecord]) -> KeyRecord:
            if any(k.name == record.name and not k.revoked for k in records):
                raise KeysFileError(
                    f"a key named {record.name!r} exists in the shared key store; revoke it first"
                )
            return record

        await self._change(change)

    async def revoke(self, name: str) -> None:
        """Mark the live key ``name`` revoked; KeysFileError if there is none."""

        def change(records: list[KeyRecord]) -> KeyRecord:
            for k in records:
                if k.name == name and not k.revoked:
                    return msgspec.structs.replace(k, revoked=True)
            raise KeysFileError(f"no live key named {name!r} in the shared key store")

        await self._change(change)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _change(self, change: _Change) -> None:
        """WATCH the hash, read it, write one record and the next version in MULTI/EXEC:
        another writer in between aborts EXEC (WatchError) and ``change`` runs again."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_WATCH_RETRIES):
                try:
                    await pipe.watch(self.hash_key)
                    raws = await cast("Awaitable[dict[bytes, bytes]]", pipe.hgetall(self.hash_key))
                    record = change(_decode_all(raws))
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(self.hash_key, record.hash, msgspec.json.encode(record).decode())
                    pipe.set(self.version_key, secrets.token_hex(VERSION_BYTES))
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise KeysFileError(f"{MAX_WATCH_RETRIES} conflicting writes to the key store in a row")


class KeyFollower:
    """Keeps one process's :class:`KeyStore` up to date with the shared keys."""

    def __init__(
        self,
        shared: SharedKeys,
        keys: KeyStore,
        *,
        every_s: float = FOLLOW_EVERY_S,
        clock: Clock | None = None,
    ) -> None:
        self.shared = shared
        self.keys = keys
        self.every_s = every_s
        self._clock = clock or SystemClock()
        self._version: bytes | None = None  # the version of the records in ``keys``
        self.loaded = False  # False until Redis first answered: only the file's keys so far
        self.ok = True  # False while Redis fails: the keys last read stay in force
        self.errors = 0  # failed syncs since start

    async def sync(self) -> bool:
        """One look at the store; True when the keys changed. Never raises a store failure:
        it keeps the keys last read and says so."""
        try:
            version = await self.shared.version()
            if self.loaded and version == self._version:
                self._rejoined()
                return False
            version, records = await self.shared.snapshot()
        except StoreFailure as exc:
            self.errors += 1
            if self.ok:
                self.ok = False
                kept = "the keys last read" if self.loaded else "the file's keys"
                log.warning(
                    "key store: Redis unavailable (%s); %s stay in force until it is back",
                    type(exc).__name__,  # never its text: it may hold the URL
                    kept,
                )
            return False
        self._rejoined()
        self._version, self.loaded = version, True
        self.keys.use_shared(records)
        return True

    async def follow(self) -> None:
        """Sync every ``every_s``, for the process's life (a lifespan task)."""
        while True:
            await self._clock.sleep(self.every_s)
            await self.sync()

    def health(self) -> dict[str, object]:
        """For ``/ready``: whether this process follows the shared keys now. Degraded still
        serves (with the keys last read), so readiness does not depend on it."""
        return {
            "backend": "redis",
            "status": "ok" if self.ok and self.loaded else "degraded",
            "failed_syncs": self.errors,
        }

    def _rejoined(self) -> None:
        if not self.ok:
            self.ok = True
            log.warning("key store: Redis is back; shared keys followed again")


def _decode_all(raws: dict[bytes, bytes]) -> list[KeyRecord]:
    records = []
    for field, raw in raws.items():
        try:
            records.append(msgspec.json.decode(raw, type=KeyRecord))
        except msgspec.DecodeError:
            # Another version's record, or a hand edit: not a live key. The field is a hash,
            # not a key, so it may be named.
            log.warning("key store: unreadable record %s… ignored", field.decode()[:12])
    return records
