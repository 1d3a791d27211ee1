"""Keeping secrets out of cassettes: by name (headers, JSON members, query parameters) and by
value (every known secret, wherever it appears, is replaced before a byte is written).

>>> redactor = Redactor.from_environment(settings)
>>> redactor.headers({"Modal-Key": "wk-123", "Accept": "application/json"})
{'modal-key': '[REDACTED]', 'accept': 'application/json'}
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from gateway.settings import Settings

REDACTED = "[REDACTED]"
# A header, JSON member or query parameter whose name says it holds a credential.
SECRET_NAME = re.compile(
    r"(^|[-_])(authorization|auth|api[-_]?key|key|secret|token|password|passwd|cookie)s?($|[-_])",
    re.IGNORECASE,
)
# Names matched above that are harmless and useful to keep readable.
NOT_SECRET = frozenset({"max_tokens", "max_completion_tokens"})
# Environment variables whose values are credentials a test run may carry.
SECRET_ENV = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|AUTH)", re.IGNORECASE)
MIN_SECRET_LEN = 8  # shorter values would redact ordinary words


def secret_name(name: str) -> bool:
    lowered = name.lower()
    if lowered in NOT_SECRET:
        return False
    return lowered in {"set-cookie", "proxy-authorization"} or bool(SECRET_NAME.search(lowered))


class Redactor:
    """Strips credentials by name and by value; ``scrub_text`` is the last pass on a file."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.values = sorted({v for v in values if len(v) >= MIN_SECRET_LEN}, key=len, reverse=True)

    @classmethod
    def from_environment(
        cls, settings: Settings | None = None, environ: Mapping[str, str] | None = None
    ) -> Redactor:
        env = os.environ if environ is None else environ
        values = [v for k, v in env.items() if SECRET_ENV.search(k)]
        if settings is not None:
            values += [s.reveal() for s in (settings.modal_key, settings.modal_secret) if s]
        return cls(values)

    def headers(self, headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
        items = headers.items() if isinstance(headers, Mapping) else headers
        out: dict[str, str] = {}
        for name, value in items:
            key = name.lower()
            out[key] = REDACTED if secret_name(key) else self.scrub_text(value)
        return out

    def json(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: REDACTED if secret_name(str(k)) and isinstance(v, str) else self.json(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, str):
            return self.scrub_text(value)
        return value

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        query = [(k, REDACTED if secret_name(k) else v) for k, v in parse_qsl(parts.query, True)]
        netloc = parts.netloc.rsplit("@", 1)[-1]  # user:password@host -> host
        return self.scrub_text(urlunsplit(parts._replace(netloc=netloc, query=urlencode(query))))

    def scrub_text(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, REDACTED)
        return text
