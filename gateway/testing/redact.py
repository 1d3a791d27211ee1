"""Keeping secrets out of cassettes: by name (headers, JSON members, query parameters) and by
value (every known secret, wherever it appears, is replaced before a byte is written). The
redactor is the gateway's own (``gateway.redact``); this module adds the test run's
environment as a source of secrets.

>>> redactor = Redactor.from_environment(settings)
>>> redactor.headers({"Modal-Key": "wk-123", "Accept": "application/json"})
{'modal-key': '[REDACTED]', 'accept': 'application/json'}
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway import redact
from gateway.redact import REDACTED, secret_name

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["REDACTED", "Redactor", "secret_name"]

# Environment variables whose values are credentials a test run may carry.
SECRET_ENV = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|AUTH)", re.IGNORECASE)


class Redactor(redact.Redactor):
    """The gateway's redactor, also knowing the secrets of the test run's environment."""

    @classmethod
    def from_environment(
        cls, settings: Settings | None = None, environ: Mapping[str, str] | None = None
    ) -> Redactor:
        env = os.environ if environ is None else environ
        values = [v for k, v in env.items() if SECRET_ENV.search(k)]
        if settings is not None:
            values += [s.reveal() for s in (settings.modal_key, settings.modal_secret) if s]
        return cls(values)
