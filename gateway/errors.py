"""The gateway's exceptions. Each class carries its HTTP status and problem type; one
place (``gateway.http.problems``) renders them as RFC 9457 ``application/problem+json``.

::

    GatewayError
    ├── ClientError                 4xx: the request is at fault
    │   ├── InvalidRequest          400  fields failed validation (every bad field, by JSON path)
    │   ├── MalformedBody           400  the body is not JSON
    │   ├── UnknownTier             400  X-Model-Tier / model names no tier (lists the valid ones)
    │   ├── PayloadTooLarge         413  body over the configured limit
    │   ├── BodyTimeout             408  the body did not arrive within server.body_timeout_s
    │   ├── SchemaInvalid           400  `schema` is not a valid JSON Schema
    │   ├── SchemaUnsupported       422  valid, but uses features the tier cannot enforce
    │   ├── Unauthenticated         401  no key, or not a live one (WWW-Authenticate: Bearer)
    │   ├── Forbidden               403  the key may not use this tier or route
    │   ├── RateLimited             429  the key is over a limit (Retry-After, x-ratelimit-*)
    │   └── UpstreamRejected        4xx  the tier refused the request (its reason is passed on)
    └── UpstreamError               5xx: a tier is at fault; every one names the tier
        ├── TierUnavailable         503  unreachable, down, cold under `deny`, unconfigured
        ├── TierTimeout             504  the tier used up its budget
        ├── BadUpstreamResponse     502  an answer the gateway cannot use (5xx, garbage, 303 loop)
        └── OutputInvalid           502  the output breaks the schema or was cut at max_tokens

Raise with a human ``detail`` and any extension members the problem body should carry::

    raise TierTimeout("prod used its 600 s budget", tier="prod", budget_s=600.0)

No message text is ever parsed to decide what an error is: the class decides.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://tier-gateway.dev/problems/"


class GatewayError(Exception):
    """Base class. ``status``/``slug``/``title`` are per class; members are per instance."""

    status: int = 500  # per class; an instance may carry the tier's own (UpstreamRejected)
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal gateway error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        status: int | None = None,
        **members: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.members = members
        if status is not None:
            self.status = status

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 body: standard members first, then this error's extensions."""
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.members)
        return body


class ClientError(GatewayError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class InvalidRequest(ClientError):
    """``errors`` member: ``[{"path": "$.schema", "message": "..."}]``, every bad field."""

    status = 400
    slug = "invalid-request"
    title = "The request failed validation"


class MalformedBody(ClientError):
    status = 400
    slug = "malformed-body"
    title = "The request body is not valid JSON"


class UnknownTier(ClientError):
    status = 400
    slug = "unknown-tier"
    title = "No such tier"


class PayloadTooLarge(ClientError):
    status = 413
    slug = "payload-too-large"
    title = "The request body is too large"


class BodyTimeout(ClientError):
    """Raised by the server's receive guard (``gateway.http.body_deadline``), so a trickled body
    ends in the same problem on every route; it always closes the connection."""

    status = 408
    slug = "body-timeout"
    title = "The request body did not arrive in time"


class SchemaInvalid(ClientError):
    status = 400
    slug = "schema-invalid"
    title = "The JSON schema is not valid"


class SchemaUnsupported(ClientError):
    status = 422
    slug = "schema-unsupported"
    title = "The JSON schema uses features the tier cannot enforce"


class Unauthenticated(ClientError):
    """Never says which key was sent: the detail names what was wrong with the header."""

    status = 401
    slug = "unauthenticated"
    title = "A valid API key is required"

    def __init__(self, detail: str, **members: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="tier-gateway"'})
        self.members.update(members)


class Forbidden(ClientError):
    status = 403
    slug = "forbidden"
    title = "The key may not do this"


class RateLimited(ClientError):
    status = 429
    slug = "rate-limited"
    title = "The key is over its limit"


class UpstreamRejected(ClientError):
    """The tier answered 4xx; ``status`` is the tier's own (400, 404, 422, ...)."""

    status = 400
    slug = "upstream-rejected"
    title = "The tier rejected the request"


class UpstreamError(GatewayError):
    status = 502
    slug = "upstream-error"
    title = "The tier failed"


class TierUnavailable(UpstreamError):
    status = 503
    slug = "tier-unavailable"
    title = "The tier is not available"


class TierTimeout(UpstreamError):
    status = 504
    slug = "tier-timeout"
    title = "The tier did not answer in time"


class BadUpstreamResponse(UpstreamError):
    status = 502
    slug = "bad-upstream-response"
    title = "The tier gave an answer the gateway cannot use"


class OutputInvalid(UpstreamError):
    """``errors`` member: the validator's first errors, ``[{"path", "keyword", "message"}]``."""

    status = 502
    slug = "output-invalid"
    title = "The tier's output does not satisfy the schema"
