"""The one place that renders errors: RFC 9457 ``application/problem+json``.

Two callers, one rendering: the completion lane (``gateway.lane``) turns an exception into
``(status, headers, body)`` with ``render``/``render_internal``, and Litestar's exception
handlers (registered for the other routes) wrap the same bodies in a ``Response``. Anything
unexpected becomes a 500 problem with no traceback and no message text, while the traceback
goes to the log.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from gateway.errors import PROBLEM_BASE, GatewayError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("gateway.errors")

_SLUGS = {
    404: ("not-found", "No such resource"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "The request body is too large"),
}


def gateway_problem(exc: GatewayError, path: str, request_id: str | None) -> dict[str, Any]:
    body = exc.problem()
    body.setdefault("instance", path)
    if request_id:
        body["request_id"] = request_id
    return body


def internal_problem(path: str) -> dict[str, Any]:
    return {
        "type": PROBLEM_BASE + "internal",
        "title": "Internal gateway error",
        "status": 500,
        "detail": "The gateway failed; the error is logged.",
        "instance": path,
    }


def http_problem(status: int, detail: str | None, path: str) -> dict[str, Any]:
    slug, title = _SLUGS.get(status, ("http-error", detail or "HTTP error"))
    return {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail or title,
        "instance": path,
    }


def log_internal(method: str, path: str, exc: BaseException) -> None:
    log.error("unhandled error on %s %s", method, path, exc_info=exc)


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content=msgspec.json.encode(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def gateway_error_handler(request: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    request_id = request.scope.get("state", {}).get("request_id")
    return problem_response(gateway_problem(exc, request.url.path, request_id), exc.headers)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    body = http_problem(exc.status_code, exc.detail, request.url.path)
    return problem_response(body, dict(exc.headers or {}))


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: log it with its traceback, answer without either (RFC 9457, status 500)."""
    log_internal(request.method, request.url.path, exc)
    return problem_response(internal_problem(request.url.path))


EXCEPTION_HANDLERS: Any = {
    GatewayError: gateway_error_handler,
    HTTPException: http_exception_handler,
    500: internal_error_handler,
}
