"""Tool calls on the embedded tier without the model: the grammar each tool choice asks of
XGrammar, how calls are read back out of the text, and how a conversation is rendered."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import msgspec
import pytest

from tiers.local.jobs import JobSpec
from tiers.local.protocol import ChatCompletionRequest, RequestRejected
from tiers.local.tools import ToolPlan, render_messages

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
TOOLS = [
    {"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "clock"}},
]


def request(**body: Any) -> ChatCompletionRequest:
    payload = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, **body}
    return msgspec.convert(payload, ChatCompletionRequest)


def test_required_holds_the_output_to_one_call_of_an_offered_tool() -> None:
    plan = ToolPlan.from_request(request(tool_choice="required"))
    assert plan is not None
    grammar = plan.grammar()
    assert grammar is not None
    jsonschema.validate({"name": "weather", "arguments": {"city": "Oslo"}}, grammar)
    jsonschema.validate({"name": "clock", "arguments": {}}, grammar)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "weather", "arguments": {}}, grammar)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "other", "arguments": {}}, grammar)
    content, (call,) = plan.calls('{"name":"weather","arguments":{"city":"Oslo"}}')
    assert content is None
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "weather",
        {"city": "Oslo"},
    )


def test_a_named_choice_holds_the_output_to_that_tools_arguments() -> None:
    choice = {"type": "function", "function": {"name": "weather"}}
    plan = ToolPlan.from_request(request(tool_choice=choice))
    assert plan is not None and plan.grammar() == WEATHER
    _, (call,) = plan.calls('{"city":"Oslo"}')
    assert call.function.name == "weather" and call.id.startswith("chatcmpl-tool-")


def test_auto_reads_hermes_blocks_for_offered_tools_only() -> None:
    plan = ToolPlan.from_request(request())
    assert plan is not None and plan.grammar() is None
    text = 'Sure. <tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'
    content, (call,) = plan.calls(text)
    assert content == "Sure." and call.function.name == "weather"
    stray = '<tool_call>{"name": "rm", "arguments": {}}</tool_call>'
    assert plan.calls(stray) == (stray, [])
    assert plan.calls("no call here") == ("no call here", [])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": None, "tool_choice": "required"}, "tool_choice"),
    ],
)
def test_a_tool_choice_without_its_tool_is_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestRejected) as refused:
        ToolPlan.from_request(request(**body))
    assert refused.value.param == param


def test_the_conversation_renders_tools_and_past_calls_as_text() -> None:
    req = request(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "4 C"},
        ]
    )
    rendered = render_messages(req)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "tool"]
    assert rendered[0]["content"].startswith("Be brief.") and '"weather"' in rendered[0]["content"]
    assert rendered[2]["content"] == (
        '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'
    )
    spec = JobSpec.from_request(req)
    assert spec.tools is not None and spec.grammar is None  # auto: free text


def test_tool_choice_none_leaves_tools_out() -> None:
    spec = JobSpec.from_request(request(tool_choice="none"))
    assert spec.tools is None
    assert "weather" not in spec.messages[0]["content"]
