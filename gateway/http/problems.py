"""The one place that renders errors: RFC 9457 ``application/problem+json``, and on the
OpenAI surface (``/v1/...``) the same facts in OpenAI's envelope, which the SDKs read::

    {"error": {"message": "<detail>", "type": "invalid_request_error" | "server_error",
               "param": "messages[0].content", "code": "<problem slug>", ...the members}}

Registered as Litestar's exception handlers for every route. A ``GatewayError`` is rendered
from its class (status, type, members); Litestar's own HTTP exceptions (404, 405 with
``Allow``, 413 from ``request_max_body_size``) get the same shape. Anything unexpected
becomes a 500 with no traceback and no message text, while the traceback goes to the log.
Each handler also records the problem's type in the request's facts
(``gateway.http.observability``) for the metric and the log line. A stream that fails after its
status line went out gets the envelope as an SSE event (``error_event``).

Every error also says whether a retry can help (``x-should-retry``, which the openai SDKs
obey before their own rules): ``false`` for the request's faults, for output cut or
breaking the schema, and for an unconfigured tier (the same answer would come three times);
``true`` for a cold or busy tier, whose ``Retry-After`` says when.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from gateway.errors import PROBLEM_BASE, GatewayError
from gateway.http.observability import FACTS, RequestFacts, facts_in

PROBLEM_JSON = "application/problem+json"
JSON = "application/json"
OPENAI_PREFIX = "/v1/"
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


def openai_error(problem: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's envelope around a problem's facts: ``message`` is the detail, ``code`` the
    problem's slug, ``param`` the field at fault (the first one named), and every other
    member of the problem rides along."""
    status = int(problem["status"])
    param = problem.get("param")
    errors = problem.get("errors")
    if param is None and status < 500 and isinstance(errors, list) and errors:
        path = errors[0].get("path") if isinstance(errors[0], dict) else None
        param = path[2:] if isinstance(path, str) and path.startswith("$.") else None
    error: dict[str, Any] = {
        "message": problem["detail"],
        "type": "invalid_request_error" if status < 500 else "server_error",
        "param": param,
        "code": str(problem["type"]).removeprefix(PROBLEM_BASE),
    }
    error.update((k, v) for k, v in problem.items() if k not in ("type", "detail", "param"))
    return {"error": error}


def should_retry(problem: dict[str, Any], headers: dict[str, str]) -> str | None:
    """``x-should-retry``: whether the same request, sent again, can get another answer."""
    status = int(problem["status"])
    slug = str(problem["type"]).removeprefix(PROBLEM_BASE)
    if status < 500 or slug == "output-invalid" or problem.get("state") == "unconfigured":
        return "false"
    if any(k.lower() == "retry-after" for k in headers):
        return "true"  # cold, busy or restarting: it will change
    return None  # the SDK's own rule (retry 5xx a few times) is fine for the rest


def render(
    problem: dict[str, Any], path: str, headers: dict[str, str] | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and the headers to send with it (content-type, x-should-retry, ``headers``)."""
    out = dict(headers or {})
    if path.startswith(OPENAI_PREFIX):
        body, out["content-type"] = msgspec.json.encode(openai_error(problem)), JSON
    else:
        body, out["content-type"] = msgspec.json.encode(problem), PROBLEM_JSON
    retry = should_retry(problem, out)
    if retry is not None:
        out["x-should-retry"] = retry
    return body, out


def error_event(exc: GatewayError, path: str, request_id: str | None) -> bytes:
    """A failure after a stream's status line went out: OpenAI's envelope as an SSE event,
    which the SDKs raise as an ``APIError`` (the facts are those of the problem)."""
    problem = gateway_problem(exc, path, request_id)
    return b"data: " + msgspec.json.encode(openai_error(problem)) + b"\n\n"


def problem_response(
    problem: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    """The problem as a Response, rendered for the path it names (``instance``)."""
    body, out = render(problem, str(problem.get("instance", "")), headers)
    media_type = out.pop("content-type")
    return Response(
        content=body, status_code=int(problem["status"]), media_type=media_type, headers=out
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
