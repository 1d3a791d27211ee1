"""Every kind of bad input gets a 4xx problem naming each bad field, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from tests.conftest import PERSON_SCHEMA, problem_of

PROBLEM = "application/problem+json"


def paths(response: Any) -> list[str]:
    return [error["path"] for error in problem_of(response)["errors"]]


def test_missing_schema_is_a_400_naming_schema(client: TestClient[Any]) -> None:
    """The field report's P0: this crashed the endpoint with KeyError: 'schema'."""
    response = client.post("/generate", json={"prompt": "Invent a person."})
    assert response.status_code == 400
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"].endswith("/invalid-request")
    assert problem["errors"] == [{"path": "$.schema", "message": "required field is missing"}]


def test_every_bad_field_is_named_in_one_response(client: TestClient[Any]) -> None:
    response = client.post(
        "/generate",
        json={
            "prompt": "",
            "schema": ["not", "an", "object"],
            "max_tokens": 9000,
            "temperature": -1,
            "top_p": "high",
            "guided_json": {},
        },
    )
    assert response.status_code == 400
    assert sorted(paths(response)) == sorted(
        ["$.prompt", "$.schema", "$.max_tokens", "$.temperature", "$.top_p", "$.guided_json"]
    )
    hints = {e["path"]: e["message"] for e in response.json()["errors"]}
    assert "response_format" in hints["$.guided_json"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tokens", 0, ">= 1"),
        ("max_tokens", 8193, "<= 8192"),
        ("max_tokens", 1.5, "int"),
        ("temperature", 2.5, "<= 2.0"),
        ("top_p", 0, "> 0.0"),
        ("top_p", 1.01, "<= 1.0"),
        ("prompt", 7, "str"),
        ("schema", "object", "object"),
    ],
)
def test_out_of_range_and_mistyped_fields(
    client: TestClient[Any], field: str, value: Any, message: str
) -> None:
    response = client.post("/generate", json={"prompt": "p", "schema": PERSON_SCHEMA, field: value})
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["path"] == f"$.{field}"
    assert message in error["message"]


def test_unknown_field_on_generate(client: TestClient[Any]) -> None:
    response = client.post("/generate", json={"prompt": "p", "schema": {}, "n": 2})
    assert response.status_code == 400
    assert paths(response) == ["$.n"]


@pytest.mark.parametrize("raw", [b"{", b"not json", b"", b'{"prompt": "p",}'])
def test_malformed_json_is_a_400(client: TestClient[Any], raw: bytes) -> None:
    response = client.post("/generate", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["type"].endswith("/malformed-body")


@pytest.mark.parametrize("raw", [b"[]", b"3", b'"text"', b"null"])
def test_body_that_is_not_an_object(client: TestClient[Any], raw: bytes) -> None:
    response = client.post("/generate", content=raw)
    assert response.status_code == 400
    assert paths(response) == ["$"]


def test_body_over_the_limit_is_a_413(client: TestClient[Any]) -> None:
    response = client.post("/generate", content=b"x" * (1_048_576 + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/payload-too-large")


def test_chat_completion_fields(client: TestClient[Any]) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "dev",
            "messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}],
            "response_format": {"type": "json_schema"},
            "stream": "yes",
            "guided_json": {"type": "object"},
        },
    )
    assert response.status_code == 400
    assert sorted(paths(response)) == sorted(
        ["$.messages[1].role", "$.response_format", "$.stream", "$.guided_json"]
    )


def test_empty_messages(client: TestClient[Any]) -> None:
    response = client.post("/v1/chat/completions", json={"model": "dev", "messages": []})
    assert response.status_code == 400
    assert paths(response) == ["$.messages"]


def test_unknown_model_lists_valid_ones(client: TestClient[Any]) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    problem = problem_of(response)
    assert problem["type"].endswith("/unknown-tier")
    assert {"dev", "prod", "Qwen/Qwen2.5-32B-Instruct"} <= set(problem["valid"])


def test_wrong_method_and_path_are_problems(client: TestClient[Any]) -> None:
    for response in (client.get("/generate"), client.post("/nowhere", json={})):
        assert response.status_code in (404, 405)
        assert response.headers["content-type"] == PROBLEM


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
generate_like = st.fixed_dictionaries(
    {},
    optional={
        "prompt": json_values,
        "schema": json_values,
        "max_tokens": json_values,
        "temperature": json_values,
        "top_p": json_values,
    },
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.one_of(generate_like, json_values))
def test_no_input_produces_a_500(client: TestClient[Any], payload: Any) -> None:
    """Arbitrary JSON bodies (the tier is unreachable: respx has no route) never crash."""
    for path in ("/generate", "/v1/chat/completions"):
        response = client.post(path, json=payload)
        assert response.status_code != 500, response.text
        rendering = PROBLEM if path == "/generate" else "application/json"
        assert response.headers["content-type"] == rendering or response.status_code < 300
