"""The embedded CPU tier, end to end: a real server process, the real SmolLM2 model.

One server for the whole module (started once: loading the model is the slow part), run
with ``--max-queue 1`` so the queue bound can be reached with three requests, and with the
model hub pointed at a sentinel socket that records any connection attempt. A few fast
tests at the end check the request rules and the scheduler without the model.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest

from tiers.local.jobs import JobSpec
from tiers.local.protocol import ChatCompletionRequest, RequestRejected
from tiers.local.scheduler import ClientGone, QueueFull, Scheduler, ShuttingDown
from tiers.local.testing import LocalTierProcess, local_tier_server

model = pytest.mark.model

# Every completion here stays short: the whole file must run in a few minutes on 2 cores.
TIMEOUT = httpx.Timeout(10.0, read=180.0)

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "tags": {
            "type": "array",
            "items": {"enum": ["red", "green", "blue"]},
            "minItems": 1,
            "maxItems": 2,
        },
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 10},
                "floor": {"type": "integer", "minimum": 0, "maximum": 9},
            },
            "required": ["city", "floor"],
        },
    },
    "required": ["name", "age", "role", "tags", "address"],
}


class Sentinel:
    """A listening socket standing in for the model hub; counts connection attempts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def attempts(self) -> int:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture(scope="module")
def hub_sentinel() -> Iterator[Sentinel]:
    sentinel = Sentinel()
    yield sentinel
    sentinel.sock.close()


@pytest.fixture(scope="module")
def server(
    hub_sentinel: Sentinel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalTierProcess]:
    hub = f"http://127.0.0.1:{hub_sentinel.port}"
    env = {
        # Not set by us: the server must switch itself offline.
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        # Were anything to reach for a hub, it would find this socket, not the internet,
        # and an empty hub cache: nothing to fall back on.
        "HF_ENDPOINT": hub,
        "HF_HOME": str(tmp_path_factory.mktemp("hf-home")),
    }
    with local_tier_server(max_queue=1, env=env, wait=False) as process:
        process.wait_ready()
        yield process


@pytest.fixture
def client(server: LocalTierProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=TIMEOUT) as http:
        yield http


def chat(client: httpx.Client, content: str, **body: Any) -> httpx.Response:
    payload = {"model": "local", "messages": [{"role": "user", "content": content}], **body}
    return client.post("/v1/chat/completions", json=payload)


def metrics(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {
        name: float(value)
        for name, value in re.findall(r"^(local_tier_\S+) (\S+)$", text, flags=re.MULTILINE)
    }


def wait_for(client: httpx.Client, name: str, value: float, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metrics(client).get(name) == value:
            return
        time.sleep(0.02)
    raise AssertionError(f"{name} never reached {value}: {metrics(client)}")


@model
def test_health_is_503_until_the_model_is_loaded_then_200(server: LocalTierProcess) -> None:
    seen = [status for status in server.health_log if status]
    assert seen[0] == 503
    assert seen[-1] == 200
    assert server.stdout().count("local tier ready:") == 1


@model
def test_nested_schema_output_validates(client: httpx.Client) -> None:
    response = chat(
        client,
        "Make up a user record.",
        max_tokens=120,
        temperature=0.8,
        seed=11,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), PERSON_SCHEMA)
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["object"] == "chat.completion"
    assert body["model"] == "local"  # the name the gateway sent, echoed like vLLM


@model
def test_max_tokens_cut_reports_length(client: httpx.Client) -> None:
    response = chat(
        client,
        "Make up a user record.",
        max_tokens=4,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "p", "schema": PERSON_SCHEMA},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(body["choices"][0]["message"]["content"])


@model
def test_uncompilable_schema_is_a_400_in_vllms_error_shape(client: httpx.Client) -> None:
    bad = {"type": "integer", "minimum": 10, "maximum": 1}
    response = chat(
        client,
        "Pick a number.",
        max_tokens=4,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": bad}},
    )
    assert response.status_code == 400
    error = response.json()
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["type"] == "BadRequestError"
    assert error["error"]["code"] == 400
    assert "minimum" in error["error"]["message"]


@model
def test_malformed_request_is_a_400_naming_the_field(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json={"messages": "hello"})
    assert response.status_code == 400
    assert "$.messages" in response.json()["error"]["message"]


@model
def test_json_object_mode_gives_an_object(client: httpx.Client) -> None:
    response = chat(
        client,
        'Reply with the JSON object {"ok": true} and nothing else.',
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert isinstance(json.loads(choice["message"]["content"]), dict)


@model
def test_plain_text_and_stop_string(client: httpx.Client) -> None:
    plain = chat(client, "Say hello.", max_tokens=6, temperature=0).json()
    text = plain["choices"][0]["message"]["content"]
    assert text.strip()
    # Stop on the second word of the greedy answer: the output ends before it.
    words = text.split()
    assert len(words) >= 2, text
    stopped = chat(client, "Say hello.", max_tokens=6, temperature=0, stop=[words[1]]).json()
    choice = stopped["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["stop_reason"] == words[1]
    assert words[1] not in choice["message"]["content"]


@model
def test_greedy_and_seeded_sampling_repeat(client: httpx.Client) -> None:
    def text(**sampling: Any) -> str:
        response = chat(client, "Name a colour.", max_tokens=6, **sampling)
        return str(response.json()["choices"][0]["message"]["content"])

    assert text(temperature=0) == text(temperature=0)
    assert text(temperature=1.0, seed=1234) == text(temperature=1.0, seed=1234)


@model
def test_models_lists_the_model(client: httpx.Client) -> None:
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["smollm2-135m-instruct"]


@model
def test_metrics_count_requests_and_tokens(client: httpx.Client) -> None:
    before = metrics(client)
    usage = chat(client, "Say hi.", max_tokens=3, temperature=0).json()["usage"]
    after = metrics(client)
    ok = 'local_tier_requests_total{outcome="ok"}'
    assert after[ok] == before[ok] + 1
    generated = (
        after["local_tier_generation_tokens_total"] - before["local_tier_generation_tokens_total"]
    )
    assert generated == usage["completion_tokens"]
    assert after["local_tier_model_loaded"] == 1
    assert after["local_tier_model_load_seconds"] > 0


@model
def test_queue_bound_gives_429_with_retry_after_and_drops_nothing(client: httpx.Client) -> None:
    """max_queue=1: one running (A), one waiting (B), the third (C) is refused at once.
    Each step waits for the server's own gauges, so no sleep decides the outcome."""
    results: dict[str, tuple[httpx.Response, float]] = {}

    def send(name: str, **body: Any) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=TIMEOUT) as own:
            response = chat(own, "Tell me a story.", temperature=0, **body)
            results[name] = (response, time.monotonic())

    # ignore_eos keeps A generating for all of its 40 tokens: long enough to queue B and
    # send C behind it, whatever the machine's speed.
    a = threading.Thread(target=send, args=("a",), kwargs={"max_tokens": 40, "ignore_eos": True})
    a.start()
    wait_for(client, "local_tier_running", 1)
    b = threading.Thread(target=send, args=("b",), kwargs={"max_tokens": 2})
    b.start()
    wait_for(client, "local_tier_queue_depth", 1)

    refused = chat(client, "Tell me a story.", max_tokens=2)

    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert error["code"] == 429
    assert error["type"] == "Too Many Requests"
    a.join()
    b.join()
    (done_a, at_a), (done_b, at_b) = results["a"], results["b"]
    assert done_a.status_code == done_b.status_code == 200
    assert done_a.json()["usage"]["completion_tokens"] == 40
    assert at_a <= at_b  # first come, first served


@model
def test_disconnected_client_stops_its_generation(
    client: httpx.Client, server: LocalTierProcess
) -> None:
    before = metrics(client)
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": "Count forever."}],
            "max_tokens": 1500,
            "ignore_eos": True,
            "temperature": 0,
        }
    ).encode()
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: local\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    wait_for(client, "local_tier_running", 1)
    raw.close()
    cancelled = 'local_tier_requests_total{outcome="cancelled"}'
    wait_for(client, cancelled, before[cancelled] + 1)
    wait_for(client, "local_tier_running", 0)
    spent = metrics(client)["local_tier_generation_tokens_total"]
    assert spent - before["local_tier_generation_tokens_total"] < 1500


def sse(response: httpx.Response) -> list[Any]:
    """The events of an SSE body, ``[DONE]`` as the string."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


@model
def test_streaming_sends_pieces_as_they_are_made_then_usage_and_done(
    client: httpx.Client,
) -> None:
    payload = {
        "model": "local",
        "messages": [{"role": "user", "content": "Invent a person."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "p", "schema": PERSON_SCHEMA},
        },
        "max_tokens": 80,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response)
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    chunks = events[:-2]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks]
    assert sum(1 for p in pieces if p) > 3  # piece by piece, not one block at the end
    finish = chunks[-1]["choices"][0]["finish_reason"]
    if finish == "stop":
        jsonschema.validate(json.loads("".join(pieces)), PERSON_SCHEMA)
    else:
        assert finish == "length"
    # the same answer as without streaming (greedy)
    whole = chat(
        client,
        "Invent a person.",
        **{
            k: v
            for k, v in payload.items()
            if k not in ("stream", "stream_options", "messages", "model")
        },
    )
    assert whole.json()["choices"][0]["message"]["content"] == "".join(pieces)


@model
def test_a_streamed_tool_call_comes_whole(client: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "record", "parameters": PERSON_SCHEMA}}
    payload = {
        "model": "local",
        "messages": [{"role": "user", "content": "Record a person."}],
        "tools": [tool],
        "tool_choice": "required",
        "max_tokens": 120,
        "temperature": 0,
        "stream": True,
    }
    with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        events = sse(response)
    assert events[-1] == "[DONE]"
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    finish = events[-2]["choices"][0]["finish_reason"]
    if finish == "length":
        return  # a 135M model may run out of tokens: then there is no call to send
    assert finish == "tool_calls"
    ((call,),) = calls
    assert call["index"] == 0 and call["function"]["name"] == "record"
    jsonschema.validate(json.loads(call["function"]["arguments"]), PERSON_SCHEMA)


@model
def test_a_client_hanging_up_mid_stream_stops_its_generation(client: httpx.Client) -> None:
    before = metrics(client)
    payload = {
        "messages": [{"role": "user", "content": "Count forever."}],
        "max_tokens": 1500,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # the stream has begun
    cancelled = 'local_tier_requests_total{outcome="cancelled"}'
    wait_for(client, cancelled, before[cancelled] + 1)
    wait_for(client, "local_tier_running", 0)
    spent = metrics(client)["local_tier_generation_tokens_total"]
    assert spent - before["local_tier_generation_tokens_total"] < 1500


@model
def test_no_hub_was_contacted(client: httpx.Client, hub_sentinel: Sentinel) -> None:
    response = chat(client, "Say hi.", max_tokens=2, temperature=0)
    assert response.status_code == 200
    assert hub_sentinel.attempts() == 0


@model
def test_sigterm_exits_cleanly(server: LocalTierProcess) -> None:
    # Last in the module: it stops the shared server.
    assert server.stop() == 0


# Without the model: request rules and the queue.


def spec(**body: Any) -> JobSpec:
    payload = {"messages": [{"role": "user", "content": "hi"}], **body}
    return JobSpec.from_request(msgspec.convert(payload, ChatCompletionRequest))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format"),
    ],
)  # fmt: skip
def test_requests_the_tier_cannot_honour_are_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestRejected) as refused:
        spec(**body)
    assert refused.value.status == 400
    assert refused.value.param == param


def test_max_tokens_defaults_to_the_room_left_and_refuses_overflow() -> None:
    assert spec().sampling(100, max_model_len=2048).max_tokens == 1948
    assert (
        spec(max_completion_tokens=5, max_tokens=9).sampling(10, max_model_len=64).max_tokens == 5
    )
    with pytest.raises(RequestRejected, match="maximum context length is 64"):
        spec(max_tokens=60).sampling(10, max_model_len=64)


async def test_scheduler_runs_fifo_and_refuses_past_the_bound() -> None:
    scheduler = Scheduler(max_queue=1)
    release = threading.Event()
    order: list[str] = []

    def job(name: str) -> Any:
        def work(cancel: threading.Event) -> str:
            release.wait(5)
            order.append(name)
            return name

        return work

    first = asyncio.create_task(scheduler.run(job("first")))
    second = asyncio.create_task(scheduler.run(job("second")))
    await asyncio.sleep(0)  # both admitted: one running, one waiting
    with pytest.raises(QueueFull) as full:
        await scheduler.run(job("third"))
    assert full.value.retry_after_s >= 1
    release.set()
    assert await asyncio.gather(first, second) == ["first", "second"]
    assert order == ["first", "second"]
    scheduler.shutdown()


async def test_scheduler_stops_work_whose_client_left() -> None:
    scheduler = Scheduler(max_queue=4)
    started, stopped = threading.Event(), threading.Event()
    gone = asyncio.Event()

    def work(cancel: threading.Event) -> None:
        started.set()
        cancel.wait(5)
        if cancel.is_set():
            stopped.set()

    task = asyncio.create_task(scheduler.run(work, until=gone.wait))
    await asyncio.to_thread(started.wait, 5)
    gone.set()
    with pytest.raises(ClientGone):
        await task
    assert stopped.is_set()
    assert scheduler.running == scheduler.waiting == 0
    scheduler.shutdown()


async def test_closing_scheduler_refuses_queued_and_new_work_but_finishes_the_running() -> None:
    scheduler = Scheduler(max_queue=4)
    started, release = threading.Event(), threading.Event()

    def running(cancel: threading.Event) -> str:
        started.set()
        release.wait(5)
        return "finished"

    first = asyncio.create_task(scheduler.run(running))
    await asyncio.to_thread(started.wait, 5)
    queued = asyncio.create_task(scheduler.run(lambda cancel: "never runs"))
    await asyncio.sleep(0)
    scheduler.close()
    with pytest.raises(ShuttingDown):
        await queued
    with pytest.raises(ShuttingDown):
        await scheduler.run(lambda cancel: "too late")
    release.set()
    assert await first == "finished"
    scheduler.shutdown()
