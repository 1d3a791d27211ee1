"""JSON log lines: one object per line on stderr, the record's ``extra`` fields as
top-level keys. Kept apart from ``gateway.http.observability`` so that the ``gateway serve``
supervisor, which only configures logging, imports neither Litestar nor prometheus_client
(~25 MB in a process that serves nothing).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the record's ``extra`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        line.pop("message", None)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # rendered already (and redacted: gateway.redact)
            line["exc"] = record.exc_text
        return msgspec.json.encode(line).decode()


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the gateway; the HTTP client's own chatter stays at WARNING."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
