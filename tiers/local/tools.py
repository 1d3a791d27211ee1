"""Tool calls on the embedded tier, as far as a 135M model can go.

>>> plan = ToolPlan.from_request(req)            # None without tools or with tool_choice none
>>> plan.grammar()                               # what XGrammar must hold the output to
>>> plan.calls(text)                             # the tool calls in what came out

- ``required``: the output is held by XGrammar to one ``{"name": ..., "arguments": {...}}``
  object whose name is one of the tools and whose arguments follow that tool's schema (vLLM
  does the same for ``required``, with a list; one call per turn is what this model manages).
- a named function: the output is that function's arguments, held to its schema.
- ``auto``: the model writes freely; Hermes-style ``<tool_call>{...}</tool_call>`` blocks in
  its text are taken as calls (vLLM's ``hermes`` parser, which the GPU tiers use). SmolLM2-135M
  seldom writes one: that is the model, not the tier.

SmolLM2's chat template knows no tools, so they are described in the system message, and a
conversation's earlier calls are written back as the same ``<tool_call>`` blocks. Pure: no
torch, no xgrammar.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from tiers.local.protocol import ChatCompletionRequest, ChatMessage, RequestRejected, ToolCall

_BLOCK = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def render_messages(req: ChatCompletionRequest) -> list[dict[str, str]]:
    """The conversation as SmolLM2's template takes it: strings only, tools described in the
    system message."""
    messages = [_render(m) for m in req.messages]
    if req.tools and req.tool_choice != "none":
        described = "\n".join(json.dumps(t.function.as_dict()) for t in req.tools)
        note = (
            "You can call these functions. To call one, answer with "
            '<tool_call>{"name": <name>, "arguments": <object>}</tool_call>\n' + described
        )
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + note}
        else:
            messages.insert(0, {"role": "system", "content": note})
    return messages


def _render(message: ChatMessage) -> dict[str, str]:
    text = message.text()
    for call in message.tool_calls or []:
        block = {"name": call.function.name, "arguments": _loads(call.function.arguments)}
        text += f"\n<tool_call>{json.dumps(block)}</tool_call>"
    return {"role": message.role, "content": text.strip()}


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class ToolPlan:
    mode: str  # "auto" | "required" | "named"
    schemas: dict[str, dict[str, Any]]  # function name -> parameters (any object when none)
    named: str | None = None

    @classmethod
    def from_request(cls, req: ChatCompletionRequest) -> ToolPlan | None:
        choice = req.tool_choice
        if not req.tools:
            if choice not in (None, "none"):
                raise RequestRejected("tool_choice needs tools", param="tool_choice")
            return None
        schemas = {t.function.name: t.function.parameters or ANY_OBJECT for t in req.tools}
        if choice is None or choice == "auto":
            return cls("auto", schemas)
        if choice == "none":
            return None
        if choice == "required":
            return cls("required", schemas)
        if isinstance(choice, str):
            raise RequestRejected(f"unknown tool_choice {choice!r}", param="tool_choice")
        if choice.function.name not in schemas:
            raise RequestRejected(
                f"tool_choice names {choice.function.name!r}, which is not among the tools",
                param="tool_choice",
            )
        return cls("named", schemas, choice.function.name)

    def grammar(self) -> dict[str, Any] | None:
        """The JSON schema the output is held to; None under ``auto``."""
        if self.mode == "named":
            assert self.named is not None
            return self.schemas[self.named]
        if self.mode == "required":
            return {
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {"name": {"const": name}, "arguments": schema},
                        "required": ["name", "arguments"],
                        "additionalProperties": False,
                    }
                    for name, schema in self.schemas.items()
                ]
            }
        return None

    def calls(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(the content left, the calls) from what the model wrote."""
        if self.mode == "named":
            assert self.named is not None
            return None, [_call(self.named, text)]
        if self.mode == "required":
            block = json.loads(text)  # the grammar made it so
            return None, [_call(block["name"], json.dumps(block["arguments"]))]
        found = []
        for match in _BLOCK.finditer(text):
            block = _loads(match.group(1))
            if (
                isinstance(block, dict)
                and block.get("name") in self.schemas
                and isinstance(block.get("arguments"), dict)
            ):
                found.append(_call(block["name"], json.dumps(block["arguments"])))
        if not found:
            return text, []
        rest = _BLOCK.sub("", text).strip()
        return rest or None, found


def _call(name: str, arguments: str) -> ToolCall:
    return ToolCall(
        id=f"chatcmpl-tool-{uuid.uuid4().hex}",
        function=ToolCall.Function(name=name, arguments=arguments),
    )
