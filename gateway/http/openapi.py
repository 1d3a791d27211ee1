"""OpenAPI for the completion routes, which read their raw body and decode it themselves (to
report every bad field at once), so Litestar cannot infer their request body.

Litestar generates the document; each completion handler names an ``operation_class``
(``documented``) that fills in the request body from msgspec's own JSON Schema of the Struct,
so the documentation and the validation cannot disagree. Litestar regenerates
``components/schemas`` from what it decodes itself, so nested definitions are inlined here
rather than referenced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, RequestBody

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


def documented(
    request: type[msgspec.Struct], ok: type[msgspec.Struct] | None, description: str
) -> type[Operation]:
    """An ``operation_class`` for a handler that reads its body raw: the operation Litestar
    builds, with the request body and the responses described from the Structs."""

    @dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            self.request_body = json_body(request)
            self.responses = {"200": json_response(ok, description), **PROBLEMS}

    Documented.__name__ = Documented.__qualname__ = f"{request.__name__}Operation"
    return Documented
