"""Bench-only: ``gateway serve`` with schema preflight and output validation off.

``create_app`` always checks (``gateway.structured.preflight.SchemaChecker``) and has no setting to
turn that off, so this script swaps in a checker that only parses the output as JSON and then
runs the real CLI. Everything else (server, workers, logging) is what ``gateway serve``
does, so the harness's gateway-nocheck differs from gateway in the checks alone. Workers are
forked from this process (granian; uvicorn runs one worker in-process), so they see the swap.
Once a setting exists, ``--nocheck-env KEY=VALUE`` runs ``gateway serve`` with it instead.

    python bench/gateway_bench/nocheck_serve.py serve --port 8001
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

import gateway.app
from gateway.ops.cli import main


class _Parsed:
    unenforced: tuple[str, ...] = ()

    def validate_output(self, text: str, finish_reason: str | None) -> Any:
        return msgspec.json.decode(text)


class JsonOnly:
    """No preflight, no schema validation: the output is only parsed."""

    def check(self, schema: object) -> _Parsed:
        return _Parsed()


if __name__ == "__main__":
    gateway.app.SchemaChecker = JsonOnly  # type: ignore[attr-defined,misc]
    raise SystemExit(main(sys.argv[1:]))
