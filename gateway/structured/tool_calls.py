"""Tool calls on the OpenAI surface: each function's ``parameters`` is preflighted like a
``response_format`` schema, and the calls a tier returns are checked against it.

>>> tools = ToolSet.preflight(req.tools, req.tool_choice, checker)   # 400/422 naming the tool
>>> tools.check_calls(choice)                                        # 502 naming the tool

A tier constrains a tool call's arguments only under ``required`` or a named choice (vLLM
builds a grammar then); under ``auto`` the model writes them freely and the Hermes parser
extracts them, so the check after generation is what makes ``arguments`` trustworthy.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import InvalidRequest, OutputInvalid, SchemaInvalid, SchemaUnsupported
from gateway.schemas import ChatChoice, FunctionTool, NamedToolChoice, ToolChoice
from gateway.structured.preflight import CheckedSchema, SchemaChecker


class ToolSet:
    """The request's functions by name, each with its preflighted schema (None: no
    ``parameters``, any JSON object will do)."""

    __slots__ = ("choice", "schemas")

    def __init__(self, schemas: dict[str, CheckedSchema | None], choice: ToolChoice) -> None:
        self.schemas = schemas
        self.choice = choice

    @classmethod
    def preflight(
        cls, tools: list[FunctionTool] | None, choice: ToolChoice | None, checker: SchemaChecker
    ) -> ToolSet | None:
        """None when no tool call can come back (no tools, or ``tool_choice`` none)."""
        if not tools:
            if choice is not None and choice != "none":
                raise InvalidRequest(
                    "tool_choice needs tools",
                    param="tool_choice",
                    errors=[{"path": "$.tool_choice", "message": "no `tools` were given"}],
                )
            return None
        schemas: dict[str, CheckedSchema | None] = {}
        for i, tool in enumerate(tools):
            name = tool.function.name
            where = f"$.tools[{i}].function"
            if name in schemas:
                raise InvalidRequest(
                    f"two tools are named {name}",
                    param=f"tools[{i}].function.name",
                    errors=[{"path": where + ".name", "message": f"duplicate name {name!r}"}],
                )
            params = tool.function.parameters
            schemas[name] = None if params is None else _checked(checker, params, name, where)
        if isinstance(choice, NamedToolChoice) and choice.function.name not in schemas:
            raise InvalidRequest(
                f"tool_choice names {choice.function.name}, which is not among the tools",
                param="tool_choice.function.name",
                errors=[
                    {
                        "path": "$.tool_choice.function.name",
                        "message": f"no tool named {choice.function.name!r}",
                    }
                ],
            )
        if choice == "none":
            return None
        return cls(schemas, choice or "auto")

    @property
    def must_call(self) -> str | None:
        """``required``, the named function, or None (under ``auto``)."""
        if isinstance(self.choice, NamedToolChoice):
            return self.choice.function.name
        return "required" if self.choice == "required" else None

    def check_calls(self, choice: ChatChoice) -> list[Any] | None:
        """The parsed arguments of each call in ``choice``; None when it made no call (and
        none was required). Raises ``OutputInvalid`` naming the tool."""
        calls = choice.message.tool_calls
        must = self.must_call
        if not calls:
            if must is None:
                return None
            if choice.finish_reason == "length":
                raise OutputInvalid(
                    "the tool call was truncated at max_tokens; raise max_tokens",
                    reason="truncated",
                    errors=[],
                )
            wanted = "a tool call" if must == "required" else f"a call of {must}"
            raise OutputInvalid(
                f"tool_choice asked for {wanted} and the tier answered without one",
                reason="schema-violation",
                errors=[{"path": "$.tool_calls", "keyword": "tool_choice", "message": "no call"}],
            )
        parsed = []
        for call in calls:
            name = call.function.name
            if name not in self.schemas or (must not in (None, "required") and name != must):
                raise OutputInvalid(
                    f"the tier called {name!r}, which the request did not offer",
                    reason="schema-violation",
                    tool=name,
                    errors=[{"path": "$.name", "keyword": "enum", "message": "unknown tool"}],
                )
            parsed.append(_arguments(self.schemas[name], call.function.arguments, name, choice))
        return parsed


def _checked(
    checker: SchemaChecker, schema: dict[str, Any], name: str, where: str
) -> CheckedSchema:
    try:
        checked = checker.check(schema)
        # A tool's parameters go to the tier as they are (vLLM builds the grammar for
        # `required` and named choices from them): what would need lowering is refused.
        checked.require_strict()
        return checked
    except (SchemaInvalid, SchemaUnsupported) as exc:
        errors = [
            {**e, "path": where + ".parameters" + str(e.get("path", "$"))[1:]}
            for e in exc.members.get("errors", [])
        ]
        members = {**exc.members, "errors": errors}
        raise type(exc)(
            f"tool {name}: {exc.detail}",
            tool=name,
            param=where[2:] + ".parameters",
            **{k: v for k, v in members.items() if k not in ("tool", "param")},
        ) from None


def _arguments(checked: CheckedSchema | None, text: str, name: str, choice: ChatChoice) -> Any:
    try:
        if checked is not None:
            return checked.validate_output(text, choice.finish_reason)
        value = msgspec.json.decode(text)
        if not isinstance(value, dict):
            raise OutputInvalid(
                "the arguments are not a JSON object",
                reason="schema-violation",
                errors=[{"path": "$", "keyword": "type", "message": "expected an object"}],
            )
        return value
    except msgspec.DecodeError as exc:
        raise OutputInvalid(
            f"tool call {name}: the arguments are not valid JSON ({exc})",
            reason="invalid-json",
            tool=name,
            errors=[{"path": "$", "keyword": None, "message": str(exc)}],
        ) from None
    except OutputInvalid as exc:
        raise OutputInvalid(f"tool call {name}: {exc.detail}", tool=name, **exc.members) from None
