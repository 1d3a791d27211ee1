"""Bench-only app factory: the gateway with schema preflight and output validation off.

``create_app`` always checks (``gateway.schema_check.SchemaChecker``) and has no setting to
turn that off; this factory builds the same app with a checker that only parses the output
as JSON, so the harness can price the checks (target ``gateway-nocheck``). Once a setting
exists, ``--nocheck-env KEY=VALUE`` runs ``gateway serve`` with it instead.

    python -m uvicorn nocheck_app:app --factory   # with bench/gateway_bench on PYTHONPATH
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar

import gateway.app
from gateway.observability import configure_logging
from gateway.settings import load_settings


class _Parsed:
    unenforced: tuple[str, ...] = ()

    def validate_output(self, text: str, finish_reason: str | None) -> Any:
        return msgspec.json.decode(text)


class JsonOnly:
    """No preflight, no schema validation: the output is only parsed."""

    def check(self, schema: object) -> _Parsed:
        return _Parsed()


def app() -> Litestar:
    configure_logging()  # as `gateway serve` does, so only the checker differs
    gateway.app.SchemaChecker = JsonOnly  # type: ignore[attr-defined,misc]
    return gateway.app.create_app(load_settings())
