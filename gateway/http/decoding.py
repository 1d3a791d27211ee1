"""Decode a request body into a Struct, reporting *every* bad field by JSON path.

msgspec stops at the first error, which is what we want on the fast path: a valid body is
decoded in one pass. Only when that fails do we walk the body field by field to collect all
the errors for one problem response.

>>> decode_body(b'{"prompt": ""}', GenerateRequest)
Traceback (most recent call last):
InvalidRequest: 2 invalid fields
"""

from __future__ import annotations

import typing
from typing import Any, TypeVar

import msgspec

from gateway.errors import InvalidRequest, MalformedBody

T = TypeVar("T", bound=msgspec.Struct)
JSON_TYPES = {
    list: "array",
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    type(None): "null",
}

# Fields clients send because older vLLM took them; current vLLM ignores them silently and
# returns unconstrained text with 200. Say what to send instead.
HINTS = {
    "guided_json": "use response_format {type: json_schema, json_schema: {name, schema}}",
    "guided_regex": "not supported by the gateway; use response_format json_schema",
    "guided_choice": "not supported by the gateway; use a json_schema with an enum",
    "guided_grammar": "not supported by the gateway; use response_format json_schema",
    "guided_decoding_backend": "the tier pins XGrammar; remove this field",
    # OpenAI fields whose meaning the gateway cannot keep: dropping them would change the
    # answer in silence.
    "functions": "the legacy functions API is not supported; use `tools`",
    "function_call": "the legacy functions API is not supported; use `tool_choice`",
    "modalities": "the tiers answer text only; remove `modalities`",
    "audio": "the tiers answer text only; remove `audio`",
    "prediction": "predicted outputs are not supported; remove `prediction`",
    "web_search_options": "the tiers cannot search the web; remove `web_search_options`",
}


def _split(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's message is ``"<what> - at `$.path`"``; keep the two parts apart."""
    text = str(exc)
    message, sep, path = text.rpartition(" - at `")
    if not sep:
        return text, "$"
    return message, path.rstrip("`")


def _join(prefix: str, sub: str) -> str:
    return prefix + sub[1:] if sub.startswith("$") else prefix


def _collect(value: Any, typ: Any, path: str, out: list[dict[str, str]]) -> None:
    """Append an error per bad field of ``value`` (a decoded JSON value) against ``typ``."""
    struct = typ if isinstance(typ, type) and issubclass(typ, msgspec.Struct) else None
    if struct is not None and isinstance(value, dict) and struct.__struct_config__.tag is None:
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        hints = typing.get_type_hints(struct, include_extras=True)
        known = {f.encode_name: f for f in info.fields}
        for name in value:
            if name not in known and struct.__struct_config__.forbid_unknown_fields:
                hint = HINTS.get(name, "unknown field")
                out.append({"path": f"{path}.{name}", "message": hint})
        for name, field in known.items():
            if name not in value:
                if field.required:
                    out.append({"path": f"{path}.{name}", "message": "required field is missing"})
                continue
            _collect(value[name], hints[field.name], f"{path}.{name}", out)
        return
    origin = typing.get_origin(typ)
    if origin is typing.Annotated:
        inner = typing.get_args(typ)[0]
        if typing.get_origin(inner) is list and isinstance(value, list):
            # Check the list's own bounds, then each item, so every bad item is named.
            try:
                msgspec.convert(value, typ, strict=True)
            except msgspec.ValidationError as exc:
                message, sub = _split(exc)
                if sub == "$":
                    out.append({"path": path, "message": message})
                    return
            _collect(value, inner, path, out)
            return
    if origin is list and isinstance(value, list):
        (item_type,) = typing.get_args(typ) or (Any,)
        for i, item in enumerate(value):
            _collect(item, item_type, f"{path}[{i}]", out)
        return
    try:
        msgspec.convert(value, typ, strict=True)
    except msgspec.ValidationError as exc:
        message, sub = _split(exc)
        out.append({"path": _join(path, sub), "message": message})


# What msgspec raises for bytes that are not one JSON document it can hold: malformed JSON
# and trailing garbage (DecodeError), a number out of range such as 1e400 (ValidationError,
# a DecodeError), invalid UTF-8 in a string (UnicodeDecodeError), and nesting deeper than
# the interpreter's recursion limit (RecursionError: ~1,000 levels, a 2 KB body).
NOT_JSON = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def malformed(exc: Exception) -> MalformedBody:
    """The 400 for a body that is not JSON, naming the fault (never a traceback)."""
    if isinstance(exc, UnicodeDecodeError):
        return MalformedBody(
            f"The body is not valid JSON: a string holds invalid UTF-8 "
            f"(byte 0x{exc.object[exc.start]:02x})",
            fault="invalid-utf8",
        )
    if isinstance(exc, RecursionError):
        return MalformedBody(
            "The body is not valid JSON the gateway accepts: arrays and objects are nested "
            "too deeply",
            fault="too-deep",
        )
    if isinstance(exc, msgspec.ValidationError):  # the only one the untyped decode raises
        message, path = _split(exc)
        where = "" if path == "$" else f" at {path}"
        return MalformedBody(f"The body is not valid JSON: {message.lower()}{where}", fault="range")
    return MalformedBody(f"The body is not valid JSON: {exc}", fault="syntax")


def decode_body(body: bytes, typ: type[T]) -> T:
    """Decode and validate in one pass; on failure raise one problem naming every bad field.

    A body that is not one JSON document (``1x``, ``[}``, ``true false``, invalid UTF-8,
    ``1e400``, nesting ~1,000 deep) is a :class:`MalformedBody` 400 naming the fault."""
    try:
        return msgspec.json.decode(body, type=typ)
    except msgspec.ValidationError:
        pass  # a wrong shape, or a fault msgspec met after the first wrong field
    except NOT_JSON as exc:
        raise malformed(exc) from None
    try:
        # The typed decode stops at the first wrong field (`1` of `1x` is not an object), so
        # the rest of the body is read only here: its faults are the client's too.
        value = msgspec.json.decode(body)
    except NOT_JSON as exc:
        raise malformed(exc) from None
    errors: list[dict[str, str]] = []
    if not isinstance(value, dict):
        got = JSON_TYPES.get(type(value), type(value).__name__)
        errors.append({"path": "$", "message": f"Expected `object`, got `{got}`"})
    else:
        _collect(value, typ, "$", errors)
    if not errors:  # the walk and msgspec disagree: still answer 400 with msgspec's word
        try:
            msgspec.convert(value, typ, strict=True)
        except msgspec.ValidationError as exc:
            message, sub = _split(exc)
            errors.append({"path": sub, "message": message})
    noun = "field" if len(errors) == 1 else "fields"
    summary = ", ".join(e["path"] for e in errors)
    raise InvalidRequest(f"{len(errors)} invalid {noun}: {summary}", errors=errors)
