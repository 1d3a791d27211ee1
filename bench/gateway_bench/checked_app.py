"""Bench-only app factory: the gateway with the real schema checker swapped in.

Until ``create_app`` wires ``gateway.schema_check.SchemaChecker`` itself (and offers a setting
to turn the checks off, which ``--nocheck-env`` then uses), the default app only decodes the
output as JSON. This factory builds the same app with preflight and output validation on,
so the harness can measure what the checks cost:

    python -m uvicorn checked_app:app --factory   # with bench/gateway_bench on PYTHONPATH
"""

from __future__ import annotations

from litestar import Litestar

import gateway.app
from gateway.observability import configure_logging
from gateway.schema_check import SchemaChecker
from gateway.settings import load_settings


def app() -> Litestar:
    configure_logging()  # as `gateway serve` does, so only the checker differs
    gateway.app.InterimChecker = SchemaChecker  # type: ignore[attr-defined,misc]
    return gateway.app.create_app(load_settings())
