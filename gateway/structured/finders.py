"""The finders behind ``gateway.structured.rules``: pure functions that, given one schema object,
return the keywords in it that a rule is about (empty: none). The rule table says what each
finding means and where the behaviour comes from; this module only looks.

>>> present("uniqueItems")({"type": "array", "uniqueItems": True})
['uniqueItems']
"""

from __future__ import annotations

import math
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
    if "format" not in obj:
        return []
    fmt = obj["format"]
    # vLLM compares any value with its set; a non-string (in data) is never a supported format
    return [] if isinstance(fmt, str) and fmt in SUPPORTED_FORMATS else ["format"]


def property_names_conflict(obj: Mapping[str, Any]) -> list[str]:
    if "propertyNames" not in obj:
        return []
    names = obj["propertyNames"]
    if (
        not isinstance(names, dict)  # XGrammar: "propertyNames must be an object"
        or "string" not in (declared_types(names) or {"string"})  # "... that validates string"
        or length_beside_pattern(names)
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


BOUNDS: Final = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits_int64(value: int | float) -> bool:
    if isinstance(value, float):
        # XGrammar converts a float bound to int64 and refuses one that loses precision at the
        # edge: -2**63 written as a float (-9.223372036854776e18) is refused.
        return -(2.0**63) < value < 2.0**63
    return INT64_MIN <= value <= INT64_MAX


def integer_bound_out_of_range(obj: Mapping[str, Any]) -> list[str]:
    return [k for k in BOUNDS if k in obj and _number(obj[k]) and not _fits_int64(obj[k])]


def fractional_integer_bound(obj: Mapping[str, Any]) -> list[str]:
    return [k for k in BOUNDS if k in obj and isinstance(obj[k], float) and not obj[k].is_integer()]


def _tightest(obj: Mapping[str, Any], inclusive: str, exclusive: str, lower: bool) -> Any:
    """The tighter of a bound and its exclusive form: (value, exclusive?, keyword) or None."""
    found = [(obj[k], k == exclusive, k) for k in (inclusive, exclusive) if _number(obj.get(k))]
    if not found:
        return None
    # lower bound: the largest value wins, exclusive before inclusive at a tie (and vice versa)
    key = (lambda b: (b[0], b[1])) if lower else (lambda b: (-b[0], b[1]))
    return max(found, key=key)


def _empty_range(obj: Mapping[str, Any]) -> str | None:
    lo = _tightest(obj, "minimum", "exclusiveMinimum", lower=True)
    hi = _tightest(obj, "maximum", "exclusiveMaximum", lower=False)
    if lo is None or hi is None:
        return None
    if "number" not in (declared_types(obj) or ()):  # only integers: XGrammar's own check
        try:  # the whole numbers inside the range
            first = math.floor(lo[0]) + 1 if lo[1] else math.ceil(lo[0])
            last = math.ceil(hi[0]) - 1 if hi[1] else math.floor(hi[0])
        except (OverflowError, ValueError):  # inf/nan cannot come from JSON; be total anyway
            return None
        return str(lo[2]) if first > last else None
    empty = lo[0] > hi[0] or (lo[0] == hi[0] and (lo[1] or hi[1]))
    return str(lo[2]) if empty else None


# Which instance type each contradictory bound constrains (a bound on another type means
# nothing, and XGrammar does not read it).
BOUND_KINDS: Final = {
    "minimum": NUM, "exclusiveMinimum": NUM, "minLength": frozenset({"string"}),
    "minItems": frozenset({"array"}), "minProperties": frozenset({"object"}),
    "required": frozenset({"object"}),
}  # fmt: skip


def contradictory_bounds(obj: Mapping[str, Any]) -> list[str]:
    """Bounds no value of their type satisfies (XGrammar refuses them): min above max, an
    empty exclusive range, more ``required`` than ``maxProperties``."""
    types = declared_types(obj) or shape_types(obj) or frozenset()
    pairs = (("minLength", "maxLength"), ("minItems", "maxItems"),
             ("minProperties", "maxProperties"))  # fmt: skip
    found = [
        lo
        for lo, hi in pairs
        if lo in obj and hi in obj and _number(obj[lo]) and _number(obj[hi]) and obj[lo] > obj[hi]
    ]
    if types & NUM and (empty := _empty_range(obj)) is not None:
        found.append(empty)
    required = obj.get("required")
    if isinstance(required, list) and _number(obj.get("maxProperties")):
        names = {r for r in required if isinstance(r, str)}
        if len(names) > obj["maxProperties"]:
            found.append("required")
    return [k for k in found if types & BOUND_KINDS[k]]


def prefix_beyond_max_items(obj: Mapping[str, Any]) -> list[str]:
    prefix = obj.get("prefixItems")
    limit = obj.get("maxItems")
    if isinstance(prefix, list) and isinstance(limit, int | float) and len(prefix) > limit:
        return ["prefixItems"]
    return []


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


def _branch_properties(obj: Mapping[str, Any]) -> set[str] | None:
    """Property names the ``anyOf``/``oneOf``/``allOf`` branches declare; None when a branch
    is a ``$ref`` (its target may declare anything: no refusal on a guess)."""
    names: set[str] = set()
    for key in ("anyOf", "oneOf", "allOf"):
        branches = obj.get(key)
        for branch in branches if isinstance(branches, list) else ():
            if not isinstance(branch, dict):
                continue
            if "$ref" in branch:
                return None
            props = branch.get("properties")
            if isinstance(props, dict):
                names |= set(props)
    return names


def required_undeclared(obj: Mapping[str, Any]) -> list[str]:
    props, required = obj.get("properties", {}), obj.get("required", [])
    if not (_closed_object(obj) and isinstance(props, dict) and isinstance(required, list)):
        return []
    missing = {name for name in required if isinstance(name, str) and name not in props}
    if not missing:
        return []
    in_branches = _branch_properties(obj)
    if in_branches is None or missing <= in_branches:
        return []
    return ["required"]


def undeclared_required(obj: Mapping[str, Any]) -> list[str]:
    """The required names ``properties`` does not declare (for the lowering)."""
    props, required = obj.get("properties", {}), obj.get("required", [])
    if not isinstance(props, dict) or not isinstance(required, list):
        return []
    return [n for n in dict.fromkeys(required) if isinstance(n, str) and n not in props]


# Regex features XGrammar 0.2.8's regex converter refuses ("... is not supported yet"), and
# the one it silently skips (lookahead). Patterns are ECMA-262; these match outside classes.
_REGEX_REFUSED = re.compile(
    # backreference, \b, \p{...}, lookbehind, atomic group, group modifiers ((?i:...)),
    # an empty class (blanked to "[]" below only when it is empty), a NUL character
    r"\\[1-9]|\\k<|\\[bB]|\\[pP]\{|\(\?<[=!]|\(\?>|\(\?[a-zA-Z-]+[:)]|\[\]|\x00",
)
_REGEX_SKIPPED = re.compile(r"\(\?[=!]")
_ESCAPE_OR_CLASS = re.compile(r"\\.|\[(?:\\.|[^\]\\])*\]", re.DOTALL)


def _outside_classes(pattern: str) -> str:
    """``pattern`` with character classes blanked and escapes kept, so ``[\\b]`` (backspace)
    and ``[(?=]`` are not read as the features above."""
    return _ESCAPE_OR_CLASS.sub(_blank, pattern)


def _blank(match: re.Match[str]) -> str:
    text = match.group()
    if text[0] == "\\":
        return text
    # an empty class stays "[]" (refused); any other class becomes a placeholder
    return "[]" if text == "[]" else "[x]" + ("\x00" if "\x00" in text else "")


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


def shape_types(obj: Mapping[str, Any]) -> frozenset[str] | None:
    """The type XGrammar gives a schema without ``type`` from its keywords (``properties``:
    an object, ``prefixItems``: an array), or None."""
    shape = frozenset(kind for kind, keys in _SHAPES.items() if any(k in obj for k in keys))
    return shape or None


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


def never(obj: Mapping[str, Any]) -> list[str]:
    """For rules the walk applies itself (they need the whole document, e.g. a ``$ref``'s
    target), not by looking at one schema object."""
    return []


# XGrammar 0.2.8's converter picks ONE of these per schema object, in this order, and reads
# none of its siblings (observed: `{"type": "integer", "minimum": 5, "maximum": 2, "anyOf":
# [...]}` compiles); only an object without any of them is converted by its `type` keywords.
XGRAMMAR_DISPATCH: Final = ("$ref", "const", "enum", "anyOf", "oneOf", "allOf")
_RANK: Final = {"$ref": 0, "const": 1, "enum": 2, "anyOf": 3, "oneOf": 3, "allOf": 4}


def xgrammar_reads(obj: Mapping[str, Any], keyword: str) -> bool:
    """Does XGrammar's converter look at ``keyword`` in ``obj`` at all?"""
    ranks = [_RANK[k] for k in XGRAMMAR_DISPATCH if k in obj]
    if not ranks:
        return True
    return _RANK.get(keyword, 99) <= min(ranks)


def true_in_prefix(obj: Mapping[str, Any]) -> list[str]:
    """XGrammar 0.2.8 refuses a ``true`` entry in ``prefixItems`` ("prefixItems must be an
    array of objects or booleans", for ``[true]`` all the same)."""
    prefix = obj.get("prefixItems")
    return ["prefixItems"] if isinstance(prefix, list) and any(v is True for v in prefix) else []
