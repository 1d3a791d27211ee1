"""OpenAPI for the completion routes, which decode their own bodies (to report every bad
field at once) and are served outside Litestar's router (``gateway.lane``).

The request body is described by msgspec's own JSON Schema of the Struct, so the documentation
and the validation cannot disagree. Litestar regenerates ``components/schemas`` from what it
decodes itself, so nested definitions are inlined here rather than referenced.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    PathItem,
    RequestBody,
)

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


def json_body(request: type[msgspec.Struct]) -> RequestBody:
    """A required JSON request body described by ``request``'s own JSON Schema."""
    return RequestBody(
        content={"application/json": OpenAPIMediaType(schema=request_schema(request))},  # type: ignore[arg-type]
        required=True,
    )


def json_response(body: type[msgspec.Struct] | None, description: str) -> OpenAPIResponse:
    schema: Any = request_schema(body) if body is not None else {"type": "object"}
    return OpenAPIResponse(
        description=description, content={"application/json": OpenAPIMediaType(schema=schema)}
    )


_PROBLEM_SCHEMA: Any = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "additionalProperties": True,
}
PROBLEMS = {
    code: OpenAPIResponse(
        description=description,
        content={"application/problem+json": OpenAPIMediaType(schema=_PROBLEM_SCHEMA)},
    )
    for code, description in (
        ("4XX", "The request is at fault: every bad field named (RFC 9457 problem)"),
        ("5XX", "A tier is at fault; the problem names it (RFC 9457 problem)"),
    )
}


def document(openapi: OpenAPI, operations: dict[str, Operation]) -> None:
    """Add POST operations that Litestar does not route (the completion lane's) to the
    document it generated."""
    for path, operation in operations.items():
        openapi.paths = openapi.paths or {}
        openapi.paths[path] = PathItem(post=operation)
