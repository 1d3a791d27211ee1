"""The finders behind ``gateway.schema_rules``: pure functions that, given one schema object,
return the keywords in it that a rule is about (empty: none). The rule table says what each
finding means and where the behaviour comes from; this module only looks.

>>> present("uniqueItems")({"type": "array", "uniqueItems": True})
['uniqueItems']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from jsonschema_rs.canonical import json as canonical_json

Finder = Callable[[Mapping[str, Any]], list[str]]

# STRING_SUPPORTED_FORMATS in vLLM 0.33.0's backend_xgrammar.py: the string formats XGrammar
# 0.2.8 has grammars for (vLLM passes `format` through).
SUPPORTED_FORMATS: Final = frozenset(
    {
        "email", "date", "time", "date-time", "duration", "ipv4", "ipv6", "hostname", "uuid",
        "uri", "uri-reference", "uri-template", "json-pointer", "relative-json-pointer",
    }
)  # fmt: skip


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NUM = frozenset({"number", "integer"})
ANY: frozenset[str] = frozenset()


def present(*keys: str) -> Finder:
    return lambda obj: [k for k in keys if k in obj]


def length_beside_pattern(obj: Mapping[str, Any]) -> list[str]:
    if "pattern" in obj or "format" in obj:
        return [k for k in ("minLength", "maxLength") if k in obj]
    return []


def unsupported_format(obj: Mapping[str, Any]) -> list[str]:
    fmt = obj.get("format")
    return ["format"] if "format" in obj and fmt not in SUPPORTED_FORMATS else []


def property_names_conflict(obj: Mapping[str, Any]) -> list[str]:
    if "propertyNames" not in obj:
        return []
    names = obj["propertyNames"]
    if (
        (isinstance(names, dict) and length_beside_pattern(names))
        or "patternProperties" in obj
        or "properties" in obj
        or obj.get("unevaluatedProperties", True) is not True
    ):
        return ["propertyNames"]
    return []


def pattern_properties_conflict(obj: Mapping[str, Any]) -> list[str]:
    pp = obj.get("patternProperties")
    if isinstance(pp, dict) and ("properties" in obj or len(pp) > 1):
        return ["patternProperties"]
    return []


def multi_branch_all_of(obj: Mapping[str, Any]) -> list[str]:
    branches = obj.get("allOf")
    return ["allOf"] if isinstance(branches, list) and len(branches) >= 2 else []


def tuple_items(obj: Mapping[str, Any]) -> list[str]:
    return ["items"] if isinstance(obj.get("items"), list) else []


def boolean_exclusive(obj: Mapping[str, Any]) -> list[str]:
    return [k for k in ("exclusiveMinimum", "exclusiveMaximum") if isinstance(obj.get(k), bool)]


def false_branch(obj: Mapping[str, Any]) -> list[str]:
    found = []
    props = obj.get("properties")
    if isinstance(props, dict) and any(v is False for v in props.values()):
        found.append("properties")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        value = obj.get(key)
        if isinstance(value, list) and any(v is False for v in value):
            found.append(key)
    return found


def empty_enum(obj: Mapping[str, Any]) -> list[str]:
    return ["enum"] if obj.get("enum") == [] else []


BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer_bound_out_of_range(obj: Mapping[str, Any]) -> list[str]:
    return [
        k for k in BOUNDS if k in obj and _number(obj[k]) and not INT64_MIN <= obj[k] <= INT64_MAX
    ]


def fractional_integer_bound(obj: Mapping[str, Any]) -> list[str]:
    return [k for k in BOUNDS if k in obj and isinstance(obj[k], float) and not obj[k].is_integer()]


def contradictory_bounds(obj: Mapping[str, Any]) -> list[str]:
    pairs = (
        ("minimum", "maximum"),
        ("minLength", "maxLength"),
        ("minItems", "maxItems"),
        ("minProperties", "maxProperties"),
    )
    return [
        lo
        for lo, hi in pairs
        if lo in obj and hi in obj and _number(obj[lo]) and _number(obj[hi]) and obj[lo] > obj[hi]
    ]


def _closed(obj: Mapping[str, Any], extra: str, uneval: str) -> bool:
    """XGrammar's strict mode (vLLM's default) reads a missing ``extra`` keyword as ``false``."""
    return obj.get(extra, False) is False and obj.get(uneval, False) is False


def min_items_beyond_tuple(obj: Mapping[str, Any]) -> list[str]:
    if not _closed(obj, "items", "unevaluatedItems") or isinstance(obj.get("items"), list):
        return []
    prefix = obj.get("prefixItems", [])
    limit = len(prefix) if isinstance(prefix, list) else 0
    return ["minItems"] if _number(obj.get("minItems")) and obj["minItems"] > limit else []


def _closed_object(obj: Mapping[str, Any]) -> bool:
    return _closed(obj, "additionalProperties", "unevaluatedProperties") and not obj.get(
        "patternProperties"
    )


def min_properties_beyond_declared(obj: Mapping[str, Any]) -> list[str]:
    props = obj.get("properties", {})
    count = len(props) if isinstance(props, dict) else 0
    if _closed_object(obj) and _number(obj.get("minProperties")) and obj["minProperties"] > count:
        return ["minProperties"]
    return []


def required_undeclared(obj: Mapping[str, Any]) -> list[str]:
    props, required = obj.get("properties", {}), obj.get("required", [])
    if not (_closed_object(obj) and isinstance(props, dict) and isinstance(required, list)):
        return []
    return ["required"] if any(name not in props for name in required) else []


# Regex features XGrammar 0.2.8's regex converter refuses ("... is not supported yet"), and
# the one it silently skips (lookahead). Patterns are ECMA-262; these match outside classes.
_REGEX_REFUSED = re.compile(
    r"\\[1-9]|\\k<|\\[bB]|\\[pP]\{|\(\?<[=!]|\(\?>",
)
_REGEX_SKIPPED = re.compile(r"\(\?[=!]")
_ESCAPE_OR_CLASS = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]", re.DOTALL)


def _outside_classes(pattern: str) -> str:
    """``pattern`` with character classes blanked and escapes kept, so ``[\\b]`` (backspace)
    and ``[(?=]`` are not read as the features above."""
    return _ESCAPE_OR_CLASS.sub(lambda m: m.group() if m.group()[0] == "\\" else "[]", pattern)


def _patterns(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    found = [("pattern", obj["pattern"])] if isinstance(obj.get("pattern"), str) else []
    pp = obj.get("patternProperties")
    if isinstance(pp, dict):
        found += [("patternProperties", key) for key in pp]
    return found


def refused_regex(obj: Mapping[str, Any]) -> list[str]:
    return [k for k, p in _patterns(obj) if _REGEX_REFUSED.search(_outside_classes(p))]


def skipped_regex(obj: Mapping[str, Any]) -> list[str]:
    return [k for k, p in _patterns(obj) if _REGEX_SKIPPED.search(_outside_classes(p))]


def _ref_kind(obj: Mapping[str, Any]) -> str | None:
    ref = obj.get("$ref")
    if not isinstance(ref, str):
        return None
    if not ref.startswith("#"):
        return "remote"
    if ref != "#" and not ref.startswith("#/"):
        return "anchor"
    if "~" in ref or "%" in ref:
        return "escaped"
    return "pointer"


def ref_is(kind: str) -> Finder:
    return lambda obj: ["$ref"] if _ref_kind(obj) == kind else []


# Schema keywords whose presence beside `$ref` changes nothing XGrammar would have to enforce.
REF_NEIGHBOURS_IGNORED: Final = frozenset(
    {
        "$ref", "$schema", "$id", "$anchor", "$dynamicAnchor", "$defs", "definitions",
        "$comment", "$vocabulary", "title", "description", "default", "examples", "deprecated",
        "readOnly", "writeOnly",
    }
)  # fmt: skip


def beside_ref(obj: Mapping[str, Any]) -> list[str]:
    if "$ref" not in obj:
        return []
    return [k for k in obj if k not in REF_NEIGHBOURS_IGNORED]


TYPED_KEYWORDS: Final = (
    (("minLength", "maxLength", "pattern", "format"), "string"),
    (("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"), "number"),
    (("minItems", "maxItems"), "array"),
    (("required", "minProperties", "maxProperties"), "object"),
)
_SHAPES: Final = {
    "object": ("properties", "additionalProperties", "patternProperties"),
    "array": ("items", "prefixItems"),
}


def untyped_assertions(obj: Mapping[str, Any]) -> list[str]:
    """XGrammar reads a schema with no ``type`` as any value (or as an object or array where
    ``properties`` or ``items`` give the shape away) and drops the other kinds' keywords."""
    shape = {kind for kind, keys in _SHAPES.items() if any(k in obj for k in keys)}
    return [k for keys, kind in TYPED_KEYWORDS if kind not in shape for k in keys if k in obj]


def declared_types(obj: Mapping[str, Any]) -> frozenset[str] | None:
    """The JSON types a (sub)schema declares in ``type``, or None when it declares none."""
    declared = obj.get("type")
    if isinstance(declared, str):
        return frozenset({declared})
    if isinstance(declared, list):
        return frozenset(t for t in declared if isinstance(t, str))
    return None


def _instance_types(branch: Any) -> frozenset[str] | None:
    if not isinstance(branch, dict):
        return None
    declared = declared_types(branch)
    if declared is not None:
        return declared
    values = [branch["const"]] if "const" in branch else branch.get("enum")
    if not isinstance(values, list):
        return None
    return frozenset(_json_type(v) for v in values)


def _json_type(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    return "null" if value is None else kinds.get(type(value), "object")


def _overlapping(branches: list[Any]) -> bool:
    """Could one value match two branches? Disjoint declared types, or a discriminating
    ``const`` under a property every branch requires, prove it cannot."""
    kinds = [_instance_types(b) for b in branches]
    if all(k is not None for k in kinds):
        seen: set[str] = set()
        for k in kinds:
            assert k is not None
            widened = k | ({"integer"} if "number" in k else set())
            if seen & widened:
                break
            seen |= widened
        else:
            return False
    return not _discriminated(branches)


def _discriminated(branches: list[Any]) -> bool:
    if not all(isinstance(b, dict) and isinstance(b.get("properties"), dict) for b in branches):
        return False
    common = set.intersection(*(set(b.get("required", [])) for b in branches))
    for name in common:
        tags = [b["properties"].get(name) for b in branches]
        if all(isinstance(t, dict) and "const" in t for t in tags):
            keys = [canonical_json.to_string(t["const"]) for t in tags]
            if len(set(keys)) == len(keys):
                return True
    return False


def overlapping_one_of(obj: Mapping[str, Any]) -> list[str]:
    branches = obj.get("oneOf")
    return ["oneOf"] if isinstance(branches, list) and _overlapping(branches) else []
