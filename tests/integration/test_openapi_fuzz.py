"""schemathesis against the app's own OpenAPI document: every documented route, with data
that fits the document and data that does not (wrong types, missing fields, odd headers),
is answered by the gateway, never by a 500, and every error is a problem body.

Bounded (``MAX_EXAMPLES`` per operation, ~25 s here) so it runs in the test command. The
tiers are stand-ins at the transport seam that answer at once: ``/warmup`` with ``wait`` never
holds, and a valid request reaches a tier that answers a completion."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
import schemathesis
from hypothesis import HealthCheck, settings
from litestar.testing import TestClient
from schemathesis.checks import CheckContext

from gateway.app import create_app
from gateway.settings import load_settings
from tests.conftest import BASE_ENV, DEV_URL, PROD_URL, completion

MAX_EXAMPLES = 100  # per operation: 7 operations in ~25 s on one shared core
PROBLEM = "application/problem+json"


def document() -> dict[str, Any]:
    app = create_app(load_settings(environ=BASE_ENV))  # nothing starts until the lifespan
    return app.openapi_schema.to_schema()


schema = schemathesis.openapi.from_dict(document())


@schemathesis.check
def answered_by_the_gateway(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """No 500; every 4xx and 5xx is an RFC 9457 problem, or on /v1/... OpenAI's envelope
    around the same facts (a tier's fault names the tier)."""
    status = response.status_code
    if status == 500:
        raise AssertionError(f"500 from {case.method} {case.path}: {response.text[:300]}")
    if status >= 400:
        content_type = response.headers.get("content-type", [""])
        first = content_type[0] if isinstance(content_type, list) else content_type
        if case.path.startswith("/v1/"):
            error = response.json().get("error")
            assert isinstance(error, dict) and error.get("message"), f"{status} without an error"
        else:
            assert first.startswith(PROBLEM), f"{status} without a problem body: {first}"
    return None


@pytest.fixture(scope="module")
def fuzz_client() -> Iterator[TestClient[Any]]:
    # Fuzzed bodies are mostly refused before any tier call: whether prod is ever reached
    # depends on what hypothesis generates, so no route can be required.
    router = respx.MockRouter(assert_all_called=False)
    for url in (DEV_URL, PROD_URL):
        router.get(url + "/health").respond(200)
        router.post(url + "/v1/chat/completions").respond(json=completion())
    app = create_app(
        load_settings(environ=BASE_ENV), transport=httpx.MockTransport(router.async_handler)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_documented_route_answers_every_input(
    case: Any, fuzz_client: TestClient[Any]
) -> None:
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    kwargs.pop("cookies", None)  # the document has none; httpx deprecates per-request ones
    if isinstance(kwargs.get("data"), bytes | str):  # raw bytes: httpx wants them as content
        kwargs["content"] = kwargs.pop("data")
    response = fuzz_client.request(**kwargs)
    case.validate_response(response, checks=[answered_by_the_gateway])
