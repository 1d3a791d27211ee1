"""The one place that renders errors: RFC 9457 ``application/problem+json``.

Registered as the app's exception handlers for the gateway's own errors, for Litestar's
HTTP exceptions (404, 405, 413, ...) and, last resort, for anything unexpected: that becomes
a 500 problem with no traceback and no message text, while the traceback goes to the log.
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


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content=msgspec.json.encode(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def gateway_error_handler(request: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    body = exc.problem()
    body.setdefault("instance", request.url.path)
    request.state.problem = exc.slug  # for the request's log line
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        body["request_id"] = request_id
    return problem_response(body, exc.headers)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    slug, title = _SLUGS.get(status, ("http-error", exc.detail or "HTTP error"))
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": exc.detail or title,
        "instance": request.url.path,
    }
    return problem_response(body, dict(exc.headers or {}))


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: log it with its traceback, answer without either (RFC 9457, status 500)."""
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = {
        "type": PROBLEM_BASE + "internal",
        "title": "Internal gateway error",
        "status": 500,
        "detail": "The gateway failed; the error is logged.",
        "instance": request.url.path,
    }
    return problem_response(body)


EXCEPTION_HANDLERS: Any = {
    GatewayError: gateway_error_handler,
    HTTPException: http_exception_handler,
    500: internal_error_handler,
}
