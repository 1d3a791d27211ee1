"""API keys: the keys file, and the store the gateway checks keys against.

>>> key = new_key()                                 # shown once, never stored
>>> add_key(path, KeyRecord(name="team-a", hash=hash_key(key), tiers=("dev",)))
>>> store = KeyStore(path); store.lookup(key).name
'team-a'

The file holds each key's SHA-256 only. A key is 256 random bits, so a fast hash is the right
one: there is nothing to brute-force that a slow hash (bcrypt, argon2) would protect, and the
lookup stays a dict access. ``KeyStore.refresh`` re-reads the file when its stat changes; the
app calls it on a short interval (``RELOAD_EVERY_S``), never per request, so a revoked or
added key takes effect without a restart and the request path does no I/O.

The file is JSON (msgspec), written whole to a temporary file and renamed, so a reader never
sees half of it. A file that stops parsing keeps the keys last read, and says so in the log.

Keys can also live in Redis, shared by every replica (``gateway.access.shared_keys``, which
hands its records to ``KeyStore.use_shared``). With both, the live keys are the union of the
two, and a key revoked in either is refused (revocation wins); a key live in both is taken
with the shared store's record.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from gateway.keyformat import new_key

__all__ = ["Grant", "KeyRecord", "KeyStore", "KeysFileError", "new_key"]
log = logging.getLogger("gateway.access.keys")

RELOAD_EVERY_S = 2.0  # a revoked key stops working within this; one stat() per interval
Role = Literal["client", "admin"]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class KeysFileError(ValueError):
    """A bad keys file or CLI request; the message names the file or the key."""


class KeyRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One key as stored: never the key itself."""

    name: str
    hash: str  # sha256 hex of the key
    tiers: tuple[str, ...]
    role: Role = "client"
    rpm: PositiveInt | None = None  # requests per minute
    tpm: PositiveInt | None = None  # tokens (prompt + completion) per minute
    gpu_seconds_per_day: PositiveInt | None = None
    revoked: bool = False  # kept, so `keys list` shows it and the name is not reused by mistake


class KeysFile(msgspec.Struct, forbid_unknown_fields=True):
    keys: list[KeyRecord] = msgspec.field(default_factory=list)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: Path) -> KeysFile:
    """The file, or an empty one when it does not exist yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return KeysFile()
    except OSError as exc:
        raise KeysFileError(f"{path}: cannot read the keys file ({exc.strerror})") from exc
    try:
        return msgspec.json.decode(raw, type=KeysFile)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise KeysFileError(f"{path}: {exc}") from exc


def write_keys(path: Path, keys: KeysFile) -> None:
    """Atomically, readable by its owner only (the hashes are not secrets, the names and
    limits are nobody else's business)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.format(msgspec.json.encode(keys)) + b"\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_key(path: Path, record: KeyRecord) -> None:
    keys = read_keys(path)
    if any(k.name == record.name and not k.revoked for k in keys.keys):
        raise KeysFileError(f"a key named {record.name!r} exists; revoke it first")
    keys.keys = [k for k in keys.keys if k.name != record.name] + [record]
    write_keys(path, keys)


def revoke_key(path: Path, name: str) -> None:
    keys = read_keys(path)
    if not any(k.name == name and not k.revoked for k in keys.keys):
        raise KeysFileError(f"no live key named {name!r} in {path}")
    keys.keys = [
        msgspec.structs.replace(k, revoked=True) if k.name == name else k for k in keys.keys
    ]
    write_keys(path, keys)


class KeyStore:
    """The live keys, by hash: the keys file's (``path``, None for none) and the shared
    store's. ``lookup`` is the request path: no I/O, one hash, one dict access, one
    constant-time compare."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._by_hash: dict[str, KeyRecord] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._from_file: list[KeyRecord] = []
        self._shared: list[KeyRecord] = []
        # The file is re-read on a worker thread, the shared keys arrive on the event loop:
        # each merge reads both halves whole, so neither undoes the other's change.
        self._merging = threading.Lock()
        self.refresh()

    def lookup(self, key: str) -> KeyRecord | None:
        digest = hash_key(key)
        record = self._by_hash.get(digest)
        # The dict finds the candidate by the digest's hash; the compare is what decides, and
        # takes the same time however much of the digest matches.
        if record is None or not hmac.compare_digest(record.hash, digest):
            return None
        return record

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when it did. A file that fails to parse
        keeps the keys last read (an operator's typo must not open or close the gateway)."""
        if self.path is None:
            return False
        try:
            st = self.path.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and self._stamp is not None:
            return False
        try:
            keys = read_keys(self.path)
        except KeysFileError as exc:
            log.warning("keys file not reloaded, the keys last read stay: %s", exc)
            return False
        with self._merging:
            self._from_file = list(keys.keys)
            self._merge()
        self._stamp = stamp
        log.info("keys loaded", extra={"keys": len(self._by_hash)})
        return True

    def use_shared(self, records: Iterable[KeyRecord]) -> None:
        """The shared store's records (revoked ones too), replacing the ones it gave before."""
        with self._merging:
            self._shared = list(records)
            self._merge()
        log.info("shared keys loaded", extra={"keys": len(self._by_hash)})

    def _merge(self) -> None:
        """Union of the live keys; a key revoked anywhere is refused everywhere. One dict
        built whole and swapped in: a request sees the old set or the new one."""
        both = [*self._from_file, *self._shared]  # later wins: the shared record
        revoked = {k.hash for k in both if k.revoked}
        self._by_hash = {k.hash: k for k in both if k.hash not in revoked}

    def names(self) -> list[str]:
        return sorted(k.name for k in self._by_hash.values())


class Grant:
    """One request's key, as the auth middleware admitted it. The dispatcher checks tiers
    against it and notes each tier answer it paid for; the middleware turns those into the
    key's spend once the handler is done."""

    __slots__ = ("calls", "key")

    def __init__(self, key: KeyRecord) -> None:
        self.key = key
        self.calls: list[tuple[str, float, int]] = []  # (tier, latency_s, tokens)

    def may_use(self, tier: str) -> bool:
        return tier in self.key.tiers

    def answered(self, tier: str, latency_s: float, tokens: int) -> None:
        self.calls.append((tier, latency_s, tokens))
