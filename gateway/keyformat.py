"""What an API key looks like: made here, recognised here. Imports nothing but the standard
library, so the redactor (``gateway.redact``, loaded by the fixtures' pytest plugin in every
test session) can know a key's shape without loading the key store.

>>> key = new_key()
>>> bool(KEY_PATTERN.fullmatch(key))
True
"""

from __future__ import annotations

import re
import secrets

KEY_PREFIX = "tg-"  # says what a leaked string is (secret scanners match on prefixes)
KEY_BYTES = 32  # 256 random bits, as OpenAI's and Stripe's keys
# token_urlsafe(32) is 43 characters. The redactor removes anything shaped so: the gateway
# holds only hashes, so it can never match a client's key by value.
KEY_PATTERN = re.compile(re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
