"""The one redactor: what a tier says, before it reaches a client, a log line, ``/status``
or a fixture, loses every configured secret and every ``Modal-*`` header it echoed.

A tier (or an edge or proxy in front of it) may echo the request's headers in an error body;
the gateway sends Modal's proxy-auth token in ``Modal-Key``/``Modal-Secret``. So every text
that came from a tier passes ``Redactor.text``: known secret values are replaced wherever
they appear, header lines naming ``Modal-*`` are dropped, and ``Modal-*: value`` pairs inside
a line (a JSON dump of the headers) lose their value::

    >>> redactor = Redactor.for_settings(settings)        # Modal key and secret
    >>> redactor.text("bad request; headers:\nModal-Key: wk-123\naccept: */*")
    'bad request; headers:\naccept: */*'

It also strips credentials by name from headers, JSON and URLs (the cassette recorder's
needs, ``gateway.testing.redact``). Client API keys join the list when they exist: pass
them to ``for_settings(settings, extra=...)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.keyformat import KEY_PATTERN, KEY_PREFIX

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
MIN_SECRET_LEN = 8  # shorter values would redact ordinary words
MIN_PARTIAL_LEN = 4  # a cut-off secret's first 4+ characters at a text's end: "wk-a" and on
MODAL_NAME = re.compile("modal-", re.I)
# A Modal-* header name; not `modal-http`, the prefix of Modal's own error messages
# ("modal-http: app for invoked web endpoint is stopped"), which say what went wrong.
_MODAL_HEADER = r"""["']?modal-(?!http\b)[\w-]*["']?"""
# A line that is a Modal-* header ("Modal-Key: wk-..."), as an echo of the request prints it.
MODAL_HEADER_LINE = re.compile(rf"^[ \t>]*{_MODAL_HEADER}[ \t]*[:=].*(\r?\n|$)", re.I | re.M)
# A Modal-* name and its value inside a line: `'Modal-Key': 'wk-..'`, `"modal-secret":"ws-.."`.
MODAL_HEADER_PAIR = re.compile(
    rf"""({_MODAL_HEADER}\s*[:=]\s*)("[^"]*"|'[^']*'|[^\s,;}}\]]+)""", re.I
)


def secret_name(name: str) -> bool:
    lowered = name.lower()
    if lowered in NOT_SECRET:
        return False
    return lowered in {"set-cookie", "proxy-authorization"} or bool(SECRET_NAME.search(lowered))


class Redactor:
    """Strips credentials by value (``text``) and by name (``headers``, ``json``, ``url``)."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self.values = sorted({v for v in values if len(v) >= MIN_SECRET_LEN}, key=len, reverse=True)
        # One pass over a text for all of them (a log line per request passes here).
        self._any = re.compile("|".join(map(re.escape, self.values))) if self.values else None
        # Anything to do at all: one search, the common case of a log line (nothing found).
        self._suspect = re.compile(
            "|".join([*map(re.escape, self.values), "(?i:modal-)", KEY_PATTERN.pattern])
        )

    @classmethod
    def for_settings(cls, settings: Settings, extra: Iterable[str] = ()) -> Redactor:
        """Every secret the settings hold (Modal's key and secret), and ``extra`` ones."""
        values = [s.reveal() for s in (settings.modal_key, settings.modal_secret) if s]
        return cls([*values, *extra])

    def text(self, text: str, *, excerpt: bool = True) -> str:
        """A tier's text made safe to show: secrets replaced, Modal-* headers dropped, and
        (``excerpt``: a text that may have been cut) a secret's beginning at its very end."""
        if self._suspect.search(text):
            text = self.scrub_text(text)
            if MODAL_NAME.search(text):
                text = MODAL_HEADER_LINE.sub("", text)
                text = MODAL_HEADER_PAIR.sub(lambda m: m.group(1) + REDACTED, text)
        return self._cut_tail(text) if excerpt else text

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
            return self.text(value, excerpt=False)
        return value

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        query = [(k, REDACTED if secret_name(k) else v) for k, v in parse_qsl(parts.query, True)]
        netloc = parts.netloc.rsplit("@", 1)[-1]  # user:password@host -> host
        return self.scrub_text(urlunsplit(parts._replace(netloc=netloc, query=urlencode(query))))

    def _cut_tail(self, text: str) -> str:
        for value in self.values:
            tail = text[-(len(value) - 1) :]
            start = tail.find(value[:MIN_PARTIAL_LEN])
            while start != -1:
                if value.startswith(tail[start:]):
                    return text[: len(text) - len(tail) + start] + REDACTED
                start = tail.find(value[:MIN_PARTIAL_LEN], start + 1)
        return text

    def scrub_text(self, text: str) -> str:
        """Known secret values and anything shaped as a client API key (``gateway.access.keys``:
        only their hashes are known) replaced (a cassette file's last pass)."""
        if KEY_PREFIX in text:
            text = KEY_PATTERN.sub(REDACTED, text)
        if self._any is None:
            return text
        return self._any.sub(REDACTED, text)


class RedactingFilter(logging.Filter):
    """Passes every log record through a redactor: its message (arguments applied), its
    string extras and its traceback, which may quote a tier's words or a URL.

    Installed on the root logger's handlers by ``install`` for the app's life."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._handlers: list[logging.Handler] = []

    def filter(self, record: logging.LogRecord) -> bool:
        # Each handler runs it: redacting a redacted text changes nothing. Every request
        # writes a line, so the common case is one regex pass over a short message.
        r = self.redactor
        record.msg, record.args = r.text(record.getMessage(), excerpt=False), None
        if record.exc_info:
            trace = logging.Formatter().formatException(record.exc_info)
            record.exc_text = r.text(trace, excerpt=False)
            record.exc_info = None  # the formatter shows exc_text, redacted
        for key, value in vars(record).items():
            if isinstance(value, str) and key not in _RESERVED:
                setattr(record, key, r.text(value, excerpt=False))
        return True

    def install(self) -> RedactingFilter:
        self._handlers = list(logging.getLogger().handlers)
        for handler in self._handlers:
            handler.addFilter(self)
        return self

    def uninstall(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self)
        self._handlers = []


_RESERVED = {*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message"}
