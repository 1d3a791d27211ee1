"""Zero configuration: `gateway serve` with no tier URL starts the embedded CPU tier as its
child, answers at once while the model loads, and serves real structured output from it.

Real processes, real model (SmolLM2-135M on the CPU), real XGrammar: marked `model`."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pydantic
import pytest

from tests.integration.gateway_process import gateway_process

pytestmark = pytest.mark.model

STARTUP_S = 60.0  # the gateway itself: imports only, the model loads behind it
CITY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "population": {"type": "integer", "minimum": 0},
    },
    "required": ["name", "population"],
    "additionalProperties": False,
}


class Gateway:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url
        self.early: dict[str, Any] = {}


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    # No GATEWAY_* at all: dev is the embedded tier, started by `gateway serve` as its child.
    with gateway_process({}, local_tier=True, startup_s=STARTUP_S) as (proc, url):
        gw = Gateway(proc, url)
        # The gateway answers before the model is loaded: the dev tier is still booting.
        gw.early["health"] = httpx.get(url + "/health", timeout=1.0)
        gw.early["status"] = httpx.get(url + "/status", timeout=5.0).json()
        gw.early["models"] = httpx.get(url + "/v1/models", timeout=5.0).json()

        # A request sent during the cold start follows dev's mode (`wait`): held, then served.
        def during_boot() -> None:
            gw.early["generate"] = httpx.post(
                url + "/generate",
                json={"prompt": "Invent a fictional city.", "schema": CITY, "max_tokens": 40},
                timeout=600,
            )

        caller = threading.Thread(target=during_boot)
        caller.start()
        caller.join(timeout=600)
        yield gw


def test_the_gateway_answers_while_the_model_loads(gateway: Gateway) -> None:
    assert gateway.early["health"].status_code == 200
    dev = gateway.early["status"]["dev"]
    assert dev["kind"] == "local"
    assert dev["state"] in ("unknown", "warming", "warm")
    ids = {m["id"] for m in gateway.early["models"]["data"]}
    assert ids == {"dev", "prod"}


def test_a_request_during_the_cold_start_is_held_then_served(gateway: Gateway) -> None:
    response = gateway.early["generate"]
    assert response.status_code == 200, response.text
    assert response.headers["x-model-tier-served"] == "dev"
    assert "x-fallback-reason" not in response.headers
    data = response.json()
    jsonschema.validate(data["output"], CITY)  # an independent validator agrees
    assert data["usage"]["completion_tokens"] > 0


def test_the_cold_start_was_observed_and_learned(gateway: Gateway) -> None:
    dev = httpx.get(gateway.url + "/status").json()["dev"]
    assert dev["state"] == "warm"
    assert dev["warmups"] == 1
    assert dev["mean_cold_start_s"] != 30.0  # moved off the seed by the observed boot
    assert dev["requests"] >= 1


def test_structured_output_with_nested_schema(gateway: Gateway) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 30},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 2},
            "meta": {
                "type": "object",
                "properties": {"year": {"type": "integer", "minimum": 1900, "maximum": 2100}},
                "required": ["year"],
            },
        },
        "required": ["title", "tags", "meta"],
    }
    response = httpx.post(
        gateway.url + "/generate",
        json={"prompt": "Describe a book.", "schema": schema, "max_tokens": 60, "temperature": 0},
        timeout=300,
    )
    if response.status_code == 502:
        # A 135M model may run out of tokens: then the gateway says so, never a bad 2xx.
        assert response.json()["reason"] in ("truncated", "schema-violation")
        return
    assert response.status_code == 200, response.text
    jsonschema.validate(response.json()["output"], schema)


def test_prod_unconfigured_falls_back_to_dev_saying_why(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.url + "/generate",
        json={"prompt": "Invent a fictional city.", "schema": CITY, "max_tokens": 40},
        headers={"X-Model-Tier": "prod"},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-model-tier-served"] == "dev"
    assert response.headers["x-fallback-reason"] == "unavailable"
    denied = httpx.post(
        gateway.url + "/generate",
        json={"prompt": "x", "schema": CITY},
        headers={"X-Model-Tier": "prod", "X-Tier-Fallback": "deny"},
        timeout=30,
    )
    assert denied.status_code == 503
    assert denied.json()["missing_setting"] == "GATEWAY_TIER_PROD_URL"


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    population: int = pydantic.Field(ge=0)


CITY_TOOL: Any = {
    "type": "function",
    "function": {"name": "record_city", "description": "Record a city", "parameters": CITY},
}


# The SDK warns when it serializes a `.parse()` message it is handed back (its `parsed`
# member is typed None on the base class): its own quirk, and the gateway accepts the result.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
def test_the_openai_sdk_against_the_embedded_tier(gateway: Gateway) -> None:
    """The official client, unchanged, through the gateway to SmolLM2: plain, parse, and a
    tool call held to the tool's schema by XGrammar (required, and named)."""
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", timeout=300) as sdk:
        plain = sdk.chat.completions.create(
            model="dev", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
        )
        assert plain.choices[0].message.content
        messages: list[Any] = [{"role": "user", "content": "Invent a city."}]
        parsed = sdk.chat.completions.parse(
            model="dev", messages=messages, response_format=City, max_tokens=40, temperature=0
        )
        assert isinstance(parsed.choices[0].message.parsed, City)
        messages.append(parsed.choices[0].message)  # the SDK's own message, sent back
        messages.append({"role": "user", "content": "Record it."})
        for choice in ("required", {"type": "function", "function": {"name": "record_city"}}):
            resp = sdk.chat.completions.create(
                model="dev",
                messages=messages,
                tools=[CITY_TOOL],
                tool_choice=choice,  # type: ignore[arg-type]
                max_tokens=40,
                temperature=0,
            )
            (call,) = resp.choices[0].message.tool_calls or []
            assert resp.choices[0].finish_reason == "tool_calls"
            assert call.function.name == "record_city"  # type: ignore[union-attr]
            jsonschema.validate(json.loads(call.function.arguments), CITY)  # type: ignore[union-attr]
