"""Cassettes: what a tier (or the gateway) answered, one readable JSON file per test.

>>> cassette = Cassette.load(Path("tests/cassettes/test_orders/test_extracts_total.json"))
>>> cassette.find(key)          # the recorded answers for one request, in call order

An interaction is found by a canonical hash of the request that decides the answer: the tier,
the method and path, and the JSON body (model, messages, schema, sampling parameters) with its
volatile members dropped; never request ids, timestamps or credentials. The same request made
twice in a test is answered by its recordings in order (the last one again after that).

The file (``version`` 1)::

    {"version": 1, "test": "tests/test_x.py::test_y", "scope": "tier",
     "recorded_at": "2026-11-27T07:40:00Z",
     "interactions": [{"key": "9f2c...", "tier": "dev", "latency_ms": 812.4,
                       "recorded_at": "...", "request": {...}, "response": {...}}]}
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from gateway.testing.redact import Redactor

FORMAT_VERSION = 1
Scope = Literal["tier", "gateway"]

# Body members that change from call to call without changing the answer.
VOLATILE_FIELDS = frozenset({"user", "metadata", "request_id", "stream_options", "store"})
# Headers a replayed response must not carry over: httpx recomputes them for the stored body.
UNREPLAYABLE_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "content-encoding", "connection", "keep-alive"}
)


class CassetteError(ValueError):
    """A cassette file that cannot be read; the message names the file."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _normalise(value: Any) -> Any:
    """1 and 1.0 are the same temperature; key order never matters."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def decode_body(content: bytes) -> tuple[Any, bool]:
    """(value, True) for a JSON body, (text, False) otherwise."""
    if not content:
        return None, True
    try:
        return json.loads(content), True
    except (UnicodeDecodeError, json.JSONDecodeError):
        return content.decode("utf-8", "replace"), False


def request_key(
    *, tier: str | None, method: str, path: str, body: bytes, route: dict[str, str] | None = None
) -> str:
    """The canonical hash of a request: equal for requests that must get the same answer."""
    value, is_json = decode_body(body)
    if is_json and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in VOLATILE_FIELDS}
    canonical = {
        "tier": tier,
        "method": method.upper(),
        "path": path,
        "route": dict(sorted((route or {}).items())),
        "body": _normalise(value),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class Interaction:
    key: str
    tier: str | None
    request: dict[str, Any]
    response: dict[str, Any]
    latency_ms: float
    recorded_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "tier": self.tier,
            "latency_ms": round(self.latency_ms, 2),
            "recorded_at": self.recorded_at,
            "request": self.request,
            "response": self.response,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interaction:
        return cls(
            key=str(data["key"]),
            tier=data.get("tier"),
            request=dict(data["request"]),
            response=dict(data["response"]),
            latency_ms=float(data.get("latency_ms", 0.0)),
            recorded_at=str(data["recorded_at"]),
        )

    def response_parts(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body bytes to build the replayed ``httpx.Response`` from."""
        resp = self.response
        if "json" in resp:
            content = json.dumps(resp["json"], ensure_ascii=False).encode()
        else:
            content = str(resp.get("text", "")).encode()
        headers = [
            (k, v) for k, v in resp.get("headers", {}).items() if k not in UNREPLAYABLE_HEADERS
        ]
        return int(resp["status"]), headers, content


@dataclass
class Cassette:
    path: Path
    test: str | None = None
    scope: Scope = "tier"
    recorded_at: str | None = None
    interactions: list[Interaction] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, *, test: str | None = None, scope: Scope = "tier") -> Cassette:
        """The cassette at ``path``, or an empty one if the file does not exist yet."""
        if not path.exists():
            return cls(path=path, test=test, scope=scope)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != FORMAT_VERSION:
                raise CassetteError(f"{path}: unknown cassette version {data.get('version')!r}")
            return cls(
                path=path,
                test=data.get("test", test),
                scope=data.get("scope", scope),
                recorded_at=data.get("recorded_at"),
                interactions=[Interaction.from_json(i) for i in data["interactions"]],
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, CassetteError):
                raise
            raise CassetteError(f"{path}: not a readable cassette ({exc})") from exc

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def find(self, key: str) -> list[Interaction]:
        return [i for i in self.interactions if i.key == key]

    def to_json(self) -> dict[str, Any]:
        stamps = [i.recorded_at for i in self.interactions]
        return {
            "version": FORMAT_VERSION,
            "test": self.test,
            "scope": self.scope,
            "recorded_at": min(stamps) if stamps else self.recorded_at or utc_now(),
            "interactions": [i.to_json() for i in self.interactions],
        }

    def save(self, redactor: Redactor) -> None:
        """Write atomically; the redactor has the last word on every byte written."""
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
        text = redactor.scrub_text(text)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)
