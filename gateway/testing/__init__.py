"""Record once, replay offline: response fixtures for the gateway and its users.

>>> from gateway.testing import Cassette, CassetteTransport
>>> transport = CassetteTransport(Cassette.load(path), mode="replay")
>>> app = create_app(settings, transport=transport)      # the gateway's tier calls, replayed
>>> client = httpx.Client(transport=transport_for_your_client, base_url=gateway_url)

The pytest plugin (``gateway.testing.pytest_plugin``) builds these per test; see
docs/testing.md. Names are imported on first use: pytest imports this package in every
session where the gateway is installed, and that must stay cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Cassette": "gateway.testing.cassette",
    "CassetteError": "gateway.testing.cassette",
    "Interaction": "gateway.testing.cassette",
    "request_key": "gateway.testing.cassette",
    "CassetteMissing": "gateway.testing.transport",
    "CassetteTransport": "gateway.testing.transport",
    "Redactor": "gateway.testing.redact",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gateway.testing' has no attribute {name!r}")
