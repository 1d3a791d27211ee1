"""OpenAPI for handlers that decode their own bodies (to report every bad field at once).

The request body is described by msgspec's own JSON Schema of the Struct, so the documentation
and the validation cannot disagree. Litestar regenerates ``components/schemas`` from what it
decodes itself, so nested definitions are inlined here rather than referenced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody

REF = "#/$defs/"


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every local ``$ref`` by its definition (the request types have no cycles)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF):
            return _inline(defs[ref.removeprefix(REF)], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def request_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    schema = msgspec.json.schema(struct)
    defs = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, defs)
    return inlined


def json_body_operation(request: type[msgspec.Struct]) -> type[Operation]:
    """An Operation class whose requestBody is ``request``'s JSON Schema."""
    schema: Any = request_schema(request)

    @dataclass
    class JsonBodyOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"application/json": OpenAPIMediaType(schema=schema)}, required=True
            )

    JsonBodyOperation.__name__ = f"{request.__name__}Operation"
    return JsonBodyOperation
