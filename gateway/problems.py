"""The one place that renders errors: RFC 9457 ``application/problem+json``, registered as
Litestar's exception handlers for every route.

A ``GatewayError`` is rendered from its class (status, type, members); Litestar's own HTTP
exceptions (404, 405 with ``Allow``, 413 from ``request_max_body_size``) get the same shape.
Anything unexpected becomes a 500 problem with no traceback and no message text, while the
traceback goes to the log. Each handler also records the problem's type in the request's
facts (``gateway.observability``) for the metric and the log line.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from gateway.errors import PROBLEM_BASE, GatewayError
from gateway.observability import FACTS, RequestFacts, facts_in

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


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        content=msgspec.json.encode(body),
        status_code=int(body["status"]),
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _facts(request: Request[Any, Any, Any], headers: dict[str, str]) -> RequestFacts:
    """The request's facts. Where no route middleware ran (Litestar's router answers 404 and
    405 itself), the problem carries the request id on its own."""
    stamped = FACTS in request.scope.get("state", {})
    facts = facts_in(request.scope)
    if not stamped:
        headers["x-request-id"] = facts.request_id
    return facts


def gateway_error_handler(request: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    headers = dict(exc.headers)
    facts = _facts(request, headers)
    facts.problem = exc.slug
    if facts.tier_requested is not None:
        headers["x-model-tier-requested"] = facts.tier_requested
    return problem_response(gateway_problem(exc, request.url.path, facts.request_id), headers)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    headers = dict(exc.headers or {})
    facts = _facts(request, headers)
    limit = None
    detail = exc.detail
    if exc.status_code == 413:  # Litestar's request_max_body_size: say what the limit is
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"the body is over the limit of {limit} bytes"
    body = http_problem(exc.status_code, detail, request.url.path)
    if limit is not None:
        body["limit"] = limit
    body["request_id"] = facts.request_id
    facts.problem = body["type"].removeprefix(PROBLEM_BASE)
    return problem_response(body, headers)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A bug: log it with its traceback, answer without either (RFC 9457, status 500).

    Litestar's own 500s are not bugs of ours: it raised them on purpose and said why (a client
    that hung up mid-body is "client disconnected prematurely"); they are logged without a
    traceback."""
    if isinstance(exc, HTTPException):
        log.warning("%s on %s %s", exc.detail, request.method, request.url.path)
        return http_exception_handler(request, exc)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    headers: dict[str, str] = {}
    facts = _facts(request, headers)
    facts.problem = "internal"
    body = internal_problem(request.url.path)
    body["request_id"] = facts.request_id
    return problem_response(body, headers)


EXCEPTION_HANDLERS: Any = {
    GatewayError: gateway_error_handler,
    HTTPException: http_exception_handler,
    500: internal_error_handler,
}
