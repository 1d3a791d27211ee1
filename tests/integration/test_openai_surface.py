"""The official ``openai`` client, unchanged, against the gateway."""

from __future__ import annotations

from typing import Any

import msgspec
import openai
import pytest
import respx
from litestar.testing import TestClient

from tests.conftest import DEV_URL, PERSON_SCHEMA, PROD_URL, completion, problem_of

CHAT = "/v1/chat/completions"


@pytest.fixture
def sdk(warm_client: TestClient[Any]) -> openai.OpenAI:
    client = warm_client
    # TestClient is an httpx.Client: the SDK sends its requests into the app in-process.
    return openai.OpenAI(
        base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client, max_retries=0
    )


def test_structured_output_round_trip(sdk: openai.OpenAI, router: respx.MockRouter) -> None:
    route = router.post(PROD_URL + CHAT).respond(200, json=completion(model="prod"))
    result = sdk.chat.completions.create(
        model="prod",
        messages=[{"role": "user", "content": "Invent a person."}],
        max_tokens=64,
        temperature=0,
        seed=7,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
        },
    )
    assert msgspec.json.decode(result.choices[0].message.content or "") == {
        "name": "Ada",
        "age": 36,
    }
    assert result.usage is not None and result.usage.total_tokens == 21
    sent = msgspec.json.decode(route.calls.last.request.content)
    assert sent["model"] == "prod"
    assert sent["response_format"]["json_schema"]["schema"] == PERSON_SCHEMA
    assert sent["seed"] == 7 and sent["max_tokens"] == 64


def test_raw_response_carries_tier_headers(sdk: openai.OpenAI, router: respx.MockRouter) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion())
    raw = sdk.chat.completions.with_raw_response.create(
        model="Qwen/Qwen2.5-7B-Instruct",
        messages=[{"role": "user", "content": "hi"}],
        response_format={"type": "json_object"},
    )
    assert raw.headers["x-model-tier-served"] == "dev"
    assert raw.parse().choices[0].finish_reason == "stop"


def test_header_overrides_model(sdk: openai.OpenAI, router: respx.MockRouter) -> None:
    dev = router.post(DEV_URL + CHAT).respond(200, json=completion())
    sdk.chat.completions.create(
        model="prod",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Model-Tier": "dev"},
    )
    assert dev.call_count == 1
    assert msgspec.json.decode(dev.calls.last.request.content)["model"] == "dev"


def test_client_errors_surface_as_sdk_exceptions(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 400


def test_json_object_mode_rejects_non_object_output(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    router.post(DEV_URL + CHAT).respond(200, json=completion(content="[1, 2]"))
    response = client.post(
        CHAT,
        json={
            "model": "dev",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"},
        },
    )
    assert response.status_code == 502
    assert problem_of(response)["type"].endswith("/output-invalid")


def test_plain_text_is_forwarded_untouched(
    client: TestClient[Any], router: respx.MockRouter
) -> None:
    upstream = completion(content="Hello there.", system_fingerprint="fp-1")
    router.post(DEV_URL + CHAT).respond(200, json=upstream)
    response = client.post(
        CHAT, json={"model": "dev", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200
    assert response.json() == upstream  # every field the tier sent, unknown ones included


def test_models_lists_the_tiers(sdk: openai.OpenAI) -> None:
    models = {m.id: m for m in sdk.models.list()}
    assert set(models) == {"dev", "prod"}


def sse_body(*contents: str) -> bytes:
    events = [{"choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}]}
              for c in contents]  # fmt: skip
    return b"".join(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n"
    )


def test_a_stream_falls_back_before_its_first_byte(
    warm_client: TestClient[Any], router: respx.MockRouter
) -> None:
    prod = router.post(PROD_URL + CHAT).respond(503, headers={"Retry-After": "30"})
    dev = router.post(DEV_URL + CHAT).respond(
        200, content=sse_body("Hel", "lo"), headers={"content-type": "text/event-stream"}
    )
    with warm_client.stream(
        "POST",
        CHAT,
        json={"model": "prod", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-model-tier-served"] == "dev"
        assert response.headers["x-fallback-reason"] == "unavailable"
        body = response.read()
    assert prod.call_count == 1 and dev.call_count == 1
    assert body == sse_body("Hel", "lo")  # as the tier sent it
    assert msgspec.json.decode(dev.calls.last.request.content)["stream"] is True


def test_a_stream_the_tier_cannot_open_is_a_status_not_an_event(
    warm_client: TestClient[Any], router: respx.MockRouter
) -> None:
    router.post(DEV_URL + CHAT).respond(400, json={"error": {"message": "prompt too long"}})
    response = warm_client.post(
        CHAT,
        json={"model": "dev", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].endswith("prompt too long")
    assert response.headers["x-should-retry"] == "false"
