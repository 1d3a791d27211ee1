"""Real OpenAI clients, unchanged, against a real gateway process whose dev tier is a
stand-in that answers as vLLM does (``openai_standin``): plain, structured, tool calls,
conversations, and errors the clients can read."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest

from tests.conftest import PERSON_SCHEMA
from tests.integration.openai_standin import StandIn, completion, message, standin_tier
from tests.integration.test_serve import gateway_process

PERSON_TOOL = {
    "type": "function",
    "function": {
        "name": "record_person",
        "description": "Record a person",
        "parameters": PERSON_SCHEMA,
    },
}


class Person(pydantic.BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with standin_tier() as server:
        yield server


@pytest.fixture(scope="module")
def gateway(standin: StandIn) -> Iterator[str]:
    env = {
        "GATEWAY_TIER_DEV_URL": standin.url,
        "GATEWAY_TIER_DEV_KIND": "openai",
        "GATEWAY_ENV": "dev",
    }
    with gateway_process(env) as (_, url):
        yield url


@pytest.fixture
def tier(standin: StandIn) -> StandIn:
    standin.seen.clear()
    standin.seen_headers.clear()
    standin.replies.clear()
    standin.arguments = {"name": "Ada", "age": 36}
    standin.fault, standin.hold, standin.hangups = None, None, 0
    standin.pieces, standin.piece_delay_s, standin.delay_s = 4, 0.0, 0.0
    return standin


@pytest.fixture
def sdk(gateway: str) -> Iterator[openai.OpenAI]:
    # The SDK's default of two retries stays on: x-should-retry must stop them where a retry
    # cannot help.
    with openai.OpenAI(base_url=gateway + "/v1", api_key="unused") as client:
        yield client


def test_plain_and_structured_with_the_sync_sdk(sdk: openai.OpenAI, tier: StandIn) -> None:
    plain = sdk.chat.completions.create(model="dev", messages=[{"role": "user", "content": "hi"}])
    assert plain.choices[0].message.content == "Hello, turn 1."
    parsed = sdk.chat.completions.parse(
        model="dev", messages=[{"role": "user", "content": "a person"}], response_format=Person
    )
    assert parsed.choices[0].message.parsed == Person(name="Ada", age=36)
    sent = tier.seen[-1]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True


def test_the_async_sdk_creates_and_parses(gateway: str, tier: StandIn) -> None:
    async def run() -> tuple[str | None, Person | None]:
        async with openai.AsyncOpenAI(base_url=gateway + "/v1", api_key="unused") as client:
            plain, parsed = await asyncio.gather(
                client.chat.completions.create(
                    model="dev", messages=[{"role": "user", "content": "hi"}]
                ),
                client.chat.completions.parse(
                    model="dev", messages=[{"role": "user", "content": "x"}], response_format=Person
                ),
            )
        return plain.choices[0].message.content, parsed.choices[0].message.parsed

    assert asyncio.run(run()) == ("Hello, turn 1.", Person(name="Ada", age=36))


@pytest.mark.parametrize(
    "tool_choice",
    ["auto", "required", {"type": "function", "function": {"name": "record_person"}}],
)
def test_tool_calls_are_forwarded_and_their_arguments_checked(
    sdk: openai.OpenAI, tier: StandIn, tool_choice: Any
) -> None:
    resp = sdk.chat.completions.create(
        model="dev",
        messages=[{"role": "user", "content": "Ada, 36"}],
        tools=[PERSON_TOOL],  # type: ignore[list-item]
        tool_choice=tool_choice,
        parallel_tool_calls=False,
    )
    (call,) = resp.choices[0].message.tool_calls or []
    assert call.function.name == "record_person"  # type: ignore[union-attr]
    assert Person.model_validate_json(call.function.arguments) == Person(name="Ada", age=36)  # type: ignore[union-attr]
    sent = tier.seen[-1]
    assert sent["tools"] == [PERSON_TOOL]
    assert sent["tool_choice"] == tool_choice and sent["parallel_tool_calls"] is False


def test_arguments_breaking_the_tools_schema_are_a_502_not_retried(
    sdk: openai.OpenAI, tier: StandIn
) -> None:
    tier.arguments = {"name": "Ada", "age": -1}
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.create(
            model="dev",
            messages=[{"role": "user", "content": "Ada"}],
            tools=[PERSON_TOOL],  # type: ignore[list-item]
            tool_choice="required",
        )
    assert info.value.status_code == 502
    assert "record_person" in info.value.message and "minimum" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(tier.seen) == 1  # the SDK's two retries were not spent on the same answer


def test_a_tools_schema_the_tier_cannot_enforce_is_a_422_naming_the_tool(
    sdk: openai.OpenAI, tier: StandIn
) -> None:
    bad = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}
    tool = {"type": "function", "function": {"name": "odd", "parameters": bad}}
    with pytest.raises(openai.UnprocessableEntityError) as info:
        sdk.chat.completions.create(
            model="dev",
            messages=[{"role": "user", "content": "x"}],
            tools=[PERSON_TOOL, tool],  # type: ignore[list-item]
        )
    body: Any = info.value.body
    assert "tool odd" in info.value.message and "uniqueItems" in info.value.message
    assert body["param"] == "tools[1].function.parameters"
    assert body["errors"][0]["path"].startswith("$.tools[1].function.parameters")
    assert tier.seen == []  # refused before any tier was woken


@pytest.mark.parametrize("with_tools", [False, True])
def test_a_conversation_appends_the_sdks_own_messages(
    sdk: openai.OpenAI, tier: StandIn, with_tools: bool
) -> None:
    messages: list[Any] = [{"role": "system", "content": "Be brief."}]
    extra: dict[str, Any] = {"tools": [PERSON_TOOL]} if with_tools else {}
    for turn in range(1, 4):
        messages.append({"role": "user", "content": f"turn {turn}"})
        resp = sdk.chat.completions.create(model="dev", messages=messages, **extra)
        reply = resp.choices[0].message
        messages.append(reply)  # the SDK's object, refusal/audio/annotations and all
        for call in reply.tool_calls or []:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": "recorded"})
    forwarded = tier.seen[-1]["messages"]
    assert [m["role"] for m in forwarded].count("user") == 3
    assistant = [m for m in forwarded if m["role"] == "assistant"]
    assert len(assistant) == 2
    for m in assistant:
        # records of the last turn stay at the gateway; what the model needs goes on
        assert not {"refusal", "annotations", "audio", "reasoning_content"} & set(m)
        assert ("tool_calls" in m) is with_tools
    if with_tools:
        tool_messages = [m for m in forwarded if m["role"] == "tool"]
        assert tool_messages[0]["tool_call_id"] == assistant[0]["tool_calls"][0]["id"]


def test_errors_carry_openais_envelope_and_say_not_to_retry(
    sdk: openai.OpenAI, tier: StandIn
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(
            model="dev",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    ],
                }
            ],
        )
    error = info.value
    assert "'image_url' is not supported" in error.message  # not just "Error code: 400"
    body: Any = error.body
    assert body["type"] == "invalid_request_error" and body["code"] == "invalid-request"
    assert body["param"] == "messages[0].content[1].type"
    assert error.response.headers["x-should-retry"] == "false"
    assert tier.seen == []


def test_values_the_tier_would_refuse_are_refused_first(sdk: openai.OpenAI, tier: StandIn) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(
            model="dev", messages=[{"role": "user", "content": "x"}], seed=2**64
        )
    assert info.value.body["param"] == "seed"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(
            model="dev",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x"}},  # type: ignore[typeddict-item]
        )
    assert "schema" in info.value.message
    assert tier.seen == []


def test_fields_are_forwarded_or_ignored(sdk: openai.OpenAI, tier: StandIn) -> None:
    sdk.chat.completions.create(
        model="dev",
        messages=[{"role": "user", "content": "x"}],
        logprobs=True,
        top_logprobs=2,
        logit_bias={"1000": -100},
        n=1,
        stop=["\n\n"],
        seed=-7,
        metadata={"team": "a"},
        store=False,
        service_tier="auto",
        user="u-1",
        reasoning_effort="low",
    )
    sent = tier.seen[-1]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    assert sent["logit_bias"] == {"1000": -100} and sent["seed"] == -7
    assert sent["stop"] == ["\n\n"] and sent["n"] == 1
    assert not {"metadata", "store", "service_tier", "user", "reasoning_effort"} & set(sent)


def test_a_refused_field_says_what_to_send_instead(sdk: openai.OpenAI, tier: StandIn) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(
            model="dev",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"guided_json": PERSON_SCHEMA},
        )
    assert "response_format" in info.value.message or "response_format" in str(info.value.body)


def test_a_tier_refusal_keeps_the_tiers_reason(sdk: openai.OpenAI, tier: StandIn) -> None:
    tier.replies.append(
        (400, {"error": {"message": "too many tokens", "type": "BadRequestError", "code": 400}})
    )
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="dev", messages=[{"role": "user", "content": "x"}])
    assert "too many tokens" in info.value.message
    assert len(tier.seen) == 1


def test_truncated_structured_output_is_not_retried(sdk: openai.OpenAI, tier: StandIn) -> None:
    tier.replies.append((200, completion(message('{"name": "A'), "dev", "length")))
    with pytest.raises(openai.InternalServerError) as info:
        sdk.chat.completions.parse(
            model="dev", messages=[{"role": "user", "content": "x"}], response_format=Person
        )
    assert "truncated" in info.value.message
    assert len(tier.seen) == 1


def test_models_answer_by_id(sdk: openai.OpenAI) -> None:
    assert sdk.models.retrieve("dev").id == "dev"
    with pytest.raises(openai.NotFoundError) as info:
        sdk.models.retrieve("gpt-4o")
    assert "gpt-4o" in info.value.message


def test_pydantic_ai_output_type(gateway: str, tier: StandIn) -> None:
    # pydantic-ai's default structured output: a `final_result` tool it requires the model to call
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    async def run() -> Person:
        # our own client, closed after: pydantic-ai's cached one would outlive the test
        async with openai.AsyncOpenAI(base_url=gateway + "/v1", api_key="unused") as client:
            model = OpenAIChatModel("dev", provider=OpenAIProvider(openai_client=client))
            return (await Agent(model, output_type=Person).run("Ada is 36.")).output

    assert asyncio.run(run()) == Person(name="Ada", age=36)
    sent = tier.seen[-1]
    assert sent["tool_choice"] == "required"
    assert [t["function"]["name"] for t in sent["tools"]] == ["final_result"]


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(gateway: str, tier: StandIn, method: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="dev", base_url=gateway + "/v1", api_key="unused")  # type: ignore[arg-type]
    person = llm.with_structured_output(Person, method=method).invoke("Ada is 36.")  # type: ignore[arg-type]
    assert person == Person(name="Ada", age=36)
    sent = tier.seen[-1]
    if method == "json_schema":
        assert sent["response_format"]["json_schema"]["name"] == "Person"
    else:
        assert sent["tool_choice"]["function"]["name"] == "Person"


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")  # the SDK's own
def test_a_parsed_message_goes_back_too(sdk: openai.OpenAI, tier: StandIn) -> None:
    messages: list[Any] = [{"role": "user", "content": "a person"}]
    parsed = sdk.chat.completions.parse(model="dev", messages=messages, response_format=Person)
    messages += [parsed.choices[0].message, {"role": "user", "content": "another"}]
    again = sdk.chat.completions.create(model="dev", messages=messages)
    assert again.choices[0].message.content == "Hello, turn 2."
    assert "parsed" not in tier.seen[-1]["messages"][1]


# --- streaming ------------------------------------------------------------------------------


def test_a_stream_comes_in_pieces_with_usage_and_tier_headers(
    sdk: openai.OpenAI, tier: StandIn
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="dev",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-model-tier-served"] == "dev"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert "".join(pieces) == "Hello, turn 1." and len(pieces) == 4  # as the tier sent them
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 15
    assert tier.seen[-1]["stream"] is True
    assert tier.seen[-1]["stream_options"] == {"include_usage": True}


def test_pieces_go_out_before_the_tier_is_done(sdk: openai.OpenAI, tier: StandIn) -> None:
    tier.hold = threading.Event()  # the tier sends the rest only once we have the first piece
    stream = sdk.chat.completions.create(
        model="dev", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    seen = iter(stream)
    first = [next(seen), next(seen)]  # the role chunk, then the first piece of content
    assert first[1].choices[0].delta.content == "Hell"
    assert not tier.hold.is_set()  # a buffering gateway would still be waiting here
    tier.hold.set()
    rest = "".join(c.choices[0].delta.content or "" for c in seen if c.choices)
    assert rest == "o, turn 1."


def test_a_streamed_answer_breaking_the_schema_ends_in_an_error_event(
    sdk: openai.OpenAI, tier: StandIn
) -> None:
    tier.content = '{"name": "Ada", "age": -1}'
    try:
        with pytest.raises(openai.APIError) as info:
            for _ in sdk.chat.completions.create(
                model="dev",
                messages=[{"role": "user", "content": "x"}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "person", "schema": PERSON_SCHEMA},
                },
                stream=True,
            ):
                pass
    finally:
        tier.content = '{"name": "Ada", "age": 36}'
    assert "does not satisfy the schema" in info.value.message
    body: Any = info.value.body
    assert body["code"] == "output-invalid" and body["tier"] == "dev"


def test_streamed_tool_call_arguments_are_assembled_and_checked(
    sdk: openai.OpenAI, tier: StandIn
) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="dev",
            messages=[{"role": "user", "content": "Ada, 36"}],
            tools=[PERSON_TOOL],  # type: ignore[list-item]
            tool_choice="required",
            stream=True,
        )
    )
    parts = [
        d.function.arguments
        for c in chunks
        for d in (c.choices[0].delta.tool_calls or [])
        if d.function and d.function.arguments
    ]
    assert len(parts) > 1 and Person.model_validate_json("".join(parts)) == Person(
        name="Ada", age=36
    )
    tier.arguments = {"name": "Ada"}  # age is required
    with pytest.raises(openai.APIError) as info:
        for _ in sdk.chat.completions.create(
            model="dev",
            messages=[{"role": "user", "content": "Ada"}],
            tools=[PERSON_TOOL],  # type: ignore[list-item]
            tool_choice="required",
            stream=True,
        ):
            pass
    assert "record_person" in info.value.message


@pytest.mark.parametrize(("fault", "words"), [("reset", "ended the stream"), ("error", "CUDA")])
def test_a_tier_failing_mid_stream_is_an_error_event_not_a_cut(
    sdk: openai.OpenAI, tier: StandIn, fault: str, words: str
) -> None:
    tier.fault = fault
    stream = iter(
        sdk.chat.completions.create(
            model="dev", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert next(stream).choices[0].delta.role == "assistant"  # the stream had begun
    with pytest.raises(openai.APIError) as info:
        list(stream)
    assert words in info.value.message
    assert info.value.body["tier"] == "dev"  # type: ignore[index]


def test_no_first_token_within_the_budget_is_a_504_before_any_byte(
    sdk: openai.OpenAI, tier: StandIn
) -> None:
    tier.fault, tier.delay_s = "first_byte_delay", 3.0
    with pytest.raises(openai.APIStatusError) as info:
        sdk.with_options(max_retries=0).chat.completions.create(
            model="dev",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"X-Request-Timeout": "1"},
        )
    assert info.value.status_code == 504
    assert "1 s" in info.value.message  # the request's own budget, X-Request-Timeout


def test_a_client_hanging_up_stops_the_tiers_stream(sdk: openai.OpenAI, tier: StandIn) -> None:
    tier.pieces, tier.piece_delay_s = 200, 0.02  # four seconds of pieces
    stream = sdk.chat.completions.create(
        model="dev", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 10
    while tier.hangups == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tier.hangups == 1


def test_langchain_streams(gateway: str, tier: StandIn) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="dev", base_url=gateway + "/v1", api_key="unused")  # type: ignore[arg-type]
    pieces = [str(chunk.content) for chunk in llm.stream("hi")]
    assert "".join(pieces) == "Hello, turn 1." and len([p for p in pieces if p]) == 4


def test_a_tier_stalling_mid_stream_past_its_idle_budget_is_an_error_event(
    standin: StandIn, tier: StandIn, tmp_path: Path
) -> None:
    config = Path(__file__).resolve().parents[2] / "config"
    (tmp_path / "tiers.toml").write_text((config / "tiers.toml").read_text())
    toml = (config / "gateway.toml").read_text()
    (tmp_path / "gateway.toml").write_text(toml.replace("stream_idle = 15.0", "stream_idle = 0.5"))
    tier.fault, tier.delay_s = "stall", 3.0
    env = {"GATEWAY_TIER_DEV_URL": standin.url, "GATEWAY_TIER_DEV_KIND": "openai",
           "GATEWAY_ENV": "dev", "GATEWAY_CONFIG": str(tmp_path / "gateway.toml")}  # fmt: skip
    with gateway_process(env) as (_, url), openai.OpenAI(base_url=url + "/v1", api_key="-") as sdk:
        stream = iter(
            sdk.chat.completions.create(
                model="dev", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        next(stream)
        started = time.monotonic()
        with pytest.raises(openai.APIError) as info:
            list(stream)
        assert time.monotonic() - started < 2.5  # the budget ended it, not the tier
    assert "stopped sending" in info.value.message and "0.5 s" in info.value.message
