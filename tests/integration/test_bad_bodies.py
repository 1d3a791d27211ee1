"""Bytes that are not one JSON document, on every route that reads a body: a 400 problem
naming the fault, and no traceback in the log (a 2-byte request must not write 40 lines).
Before the fix each of these was a 500 with a full traceback: msgspec's typed decode stops
at the first wrong field, and the untyped second pass raised unhandled errors."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from tests.conftest import DEV_URL, PERSON_SCHEMA, completion, problem_of

PROBLEM = "application/problem+json"


def rendering(path: str) -> str:
    """/v1/...: OpenAI's error envelope (its facts are the problem's); the rest: RFC 9457."""
    return "application/json" if path.startswith("/v1/") else PROBLEM


ROUTES = ("/generate", "/v1/chat/completions", "/warmup")

BAD_BODIES = {
    "trailing garbage after a number": (b"1x", "trailing characters"),
    "a closing brace for an array": (b"[}", "invalid character"),
    "two values": (b"true false", "trailing characters"),
    "an object and garbage": (b'{"tier": "dev"} x', "trailing characters"),
    "invalid UTF-8 in a string": (b'{"prompt": "\xff\xfe", "schema": {}}', "invalid UTF-8"),
    "invalid UTF-8 in a key": (b'{"tier": "dev", "\xc3": 1}', "invalid UTF-8"),
    "nesting 1,000 deep": (b"[" * 1000 + b"]" * 1000, "nested too deeply"),
    "nesting 1,000 deep in a member": (
        b'{"prompt": "p", "schema": ' + b'{"a":' * 1000 + b"1" + b"}" * 1001,
        "nested too deeply",
    ),
    "a number out of range": (b'{"prompt": "p", "schema": {}, "temperature": 1e400}', "range"),
    "a number out of range alone": (b"1e400", "range"),
    "a number out of range, nested": (b'{"tier": "dev", "x": [-1e999]}', "range"),
}


@pytest.fixture
def answering(router: respx.MockRouter, request: pytest.FixtureRequest) -> respx.MockRouter:
    """The dev tier answers every completion (a valid body reaches it)."""
    request.node.add_marker(pytest.mark.uncalled_routes)  # drawn bodies may all be refused
    router.post(DEV_URL + "/v1/chat/completions").respond(json=completion())
    return router


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_a_body_that_is_not_one_json_document_is_a_400_naming_the_fault(
    client: TestClient[Any], caplog: pytest.LogCaptureFixture, route: str, case: str
) -> None:
    raw, fault = BAD_BODIES[case]
    with caplog.at_level(logging.INFO):
        response = client.post(route, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == rendering(route)
    problem = problem_of(response)
    assert problem["type"].endswith("/malformed-body")
    assert fault in problem["detail"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def is_answer(response: Any) -> bool:
    """A 2xx, or a problem that is not the gateway's own failure."""
    if response.status_code < 300:
        return True
    if response.headers["content-type"] != rendering(str(response.url.path)):
        return False
    problem = problem_of(response)
    return response.status_code != 500 and not problem["type"].endswith("/internal")


VALID = {
    "/generate": {"prompt": "Invent a person.", "schema": PERSON_SCHEMA},
    "/v1/chat/completions": {"model": "dev", "messages": [{"role": "user", "content": "hi"}]},
    "/warmup": {"tier": "dev"},
}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid body of one route with bytes flipped, cut, inserted or repeated."""
    import msgspec

    route = draw(st.sampled_from(ROUTES))
    raw = bytearray(msgspec.json.encode(VALID[route]))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw)))
        op = draw(st.sampled_from(("flip", "cut", "insert", "repeat")))
        if op == "flip" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del raw[at:]
        elif op == "insert":
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            raw[at:at] = raw[at : at + draw(st.integers(1, 16))] * draw(st.integers(1, 400))
    return route, bytes(raw)


arbitrary = st.tuples(st.sampled_from(ROUTES), st.binary(max_size=256))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=st.one_of(arbitrary, mutated()))
def test_no_bytes_produce_a_500(
    answering: respx.MockRouter, client: TestClient[Any], case: tuple[str, bytes]
) -> None:
    route, raw = case
    response = client.post(route, content=raw, headers={"content-type": "application/json"})
    assert is_answer(response), (response.status_code, response.text)
