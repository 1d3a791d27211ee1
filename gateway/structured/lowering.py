"""Lowering: rewrite the parts of a schema the tier refuses or cannot enforce into a schema it
compiles, so the request is served and the output is validated against the ORIGINAL afterwards.

Every lowering keeps one promise: the lowered schema accepts every instance the original
accepts (it only drops or loosens constraints, or rewrites them into an equivalent form), so
constrained generation never rules out a valid answer. What it drops is checked after
generation; a violation is retried (``schema_retries``) and then answered 502.

>>> node = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
>>> drop(node, ["uniqueItems"], Lowering(node, 2020))
True
>>> node
{'type': 'array', 'items': {'type': 'integer'}}

A lowering returns False where nothing can serve the schema (an ``allOf`` branch that is
``false``): the keyword stays refused (422). Each rule in ``gateway.structured.rules`` names its
lowering; these functions only rewrite one schema object of a private copy.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import unquote

from gateway.structured.finders import BOUND_KINDS, declared_types, undeclared_required

LowerFn = Callable[[dict[str, Any], list[str], "Lowering"], bool]

_MISSING: Final = object()
MAX_REF_HOPS: Final = 8  # an allOf of $refs of allOfs... deeper than any real schema nests
# Keywords that describe and never constrain: a merge does not need them.
_ANNOTATIONS: Final = frozenset(
    {"title", "description", "$comment", "examples", "default", "deprecated", "readOnly",
     "writeOnly", "$schema", "$id", "$anchor", "$dynamicAnchor", "$defs", "definitions"}
)  # fmt: skip
# Keywords whose meaning depends on a sibling: two branches' groups are never mixed.
_GROUPS: Final = (
    frozenset({"if", "then", "else"}),
    frozenset({"contains", "minContains", "maxContains"}),
    frozenset({"items", "additionalItems"}),
)
ALL_TYPES: Final = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
_LOWER_BOUNDS: Final = frozenset({"minimum", "minLength", "minItems", "minProperties"})
_UPPER_BOUNDS: Final = frozenset({"maximum", "maxLength", "maxItems", "maxProperties"})


class Lowering:
    """The document being lowered (a private copy) and its draft: lowerings that follow
    ``$ref`` or add a definition need them."""

    def __init__(self, root: Any, draft: int) -> None:
        self.root, self.draft = root, draft
        self.added = 0

    def resolve(self, ref: Any) -> Any:
        """The target of a local JSON pointer (``~0``/``~1``/``%`` escapes decoded), or
        ``_MISSING``."""
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            return _MISSING
        target = self.root
        for raw in ref[2:].split("/") if ref != "#" else ():
            part = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                return _MISSING
        return target

    def define(self, schema: Any) -> str:
        """Add ``schema`` under ``$defs`` with a plain name; return the pointer to it."""
        assert isinstance(self.root, dict)
        defs = self.root.setdefault("$defs", {})
        while f"lowered{self.added}" in defs:
            self.added += 1
        name = f"lowered{self.added}"
        defs[name] = copy.deepcopy(schema)
        return f"#/$defs/{name}"

    def conjuncts(self, schema: Any, hops: int = 0) -> list[dict[str, Any]] | None:
        """``schema`` as a list of objects without ``$ref``/``allOf`` whose conjunction it
        means (refs followed, nested ``allOf`` flattened); None: it admits nothing. A ``$ref``
        that cannot be followed is left out, which only loosens."""
        if schema is False:
            return None
        if not isinstance(schema, dict):
            return []
        rest = {k: v for k, v in schema.items() if k not in ("$ref", "allOf")}
        parts: list[dict[str, Any]] = []
        if "$ref" in schema:
            if self.draft < 2019:
                rest = {}  # before 2019-09 every keyword beside $ref is ignored
            target = self.resolve(schema["$ref"]) if hops < MAX_REF_HOPS else _MISSING
            if target is not _MISSING:
                found = self.conjuncts(target, hops + 1)
                if found is None:
                    return None
                parts += found
        branches = None
        if "allOf" in schema and (self.draft >= 2019 or "$ref" not in schema):
            branches = schema["allOf"]
        for branch in branches if isinstance(branches, list) else ():
            found = self.conjuncts(branch, hops + 1) if hops < MAX_REF_HOPS else []
            if found is None:
                return None
            parts += found
        return [rest, *parts]


def drop(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """Leave the keywords out: the tier generates without them, the validator checks them."""
    for key in found:
        node.pop(key, None)
    return True


# `^ATOM+$` / `^ATOM*$`, ATOM one character: a class, an escape, `.` or a plain character.
_REPEATED_ATOM: Final = re.compile(
    r"\^(\[(?:\\.|[^\]\\])*\]|\\[^\duUxXcpPkbB]|[^\\()|?*+{}\[\]^$])([+*])\$"
)


def drop_length(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """Length beside pattern/format: where the pattern is one repeated character
    (``^[A-Z]+$``) the length folds into it exactly (``^[A-Z]{1,4}$``); otherwise the tier keeps
    the pattern or format (usually the more specific) and the validator checks the length."""
    pattern, lo, hi = node.get("pattern"), node.get("minLength", 0), node.get("maxLength")
    match = _REPEATED_ATOM.fullmatch(pattern) if isinstance(pattern, str) else None
    if match and "format" not in node and _whole(lo) and (hi is None or _whole(hi)):
        least = max(int(lo), 1 if match.group(2) == "+" else 0)
        most = "" if hi is None else str(int(hi))
        node["pattern"] = f"^{match.group(1)}{{{least},{most}}}$"
    return drop(node, ["minLength", "maxLength"], low)


def _whole(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == int(value)


def patterns_into_additional(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """patternProperties beside properties or with several patterns: the patterns' schemas
    become alternatives of additionalProperties (a property the patterns would match then
    matches one of the alternatives; which one is checked after generation)."""
    patterns = node.pop("patternProperties", {})
    if "additionalProperties" not in node:
        return True  # absent: any other property is allowed already
    extra = node["additionalProperties"]
    if extra is True:
        return True
    alternatives = [*patterns.values()] + ([] if extra is False else [extra])
    node["additionalProperties"] = (
        alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    )
    return True


def merge_all_of(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """allOf with several branches: merge the branches into the object (properties and
    required united, bounds tightened). A branch that cannot be merged without changing the
    meaning of a sibling (two ``if``s, two ``contains``) is left out: the tier generates
    without it, the validator checks it."""
    if low.draft < 2019 and "$ref" in node:
        node.pop("allOf")  # ignored beside $ref before 2019-09
        return True
    parts = low.conjuncts({"allOf": node.pop("allOf")})
    if parts is None:
        return False
    return all(_merge(node, part) for part in parts)  # stops at the first that admits nothing


def _merge(node: dict[str, Any], part: dict[str, Any]) -> bool:
    """Merge ``part`` into ``node`` (both hold); False only when the two admit nothing."""
    for group in _GROUPS:
        if (
            group & part.keys()
            and group & node.keys()
            and any(node.get(k, _MISSING) != part.get(k, _MISSING) for k in group)
        ):
            part = {k: v for k, v in part.items() if k not in group}
    for key, value in part.items():
        if key in _ANNOTATIONS:
            continue
        if key not in node:
            node[key] = copy.deepcopy(value)
        elif node[key] == value:
            continue
        elif key == "type":
            kinds = _intersect_types(node[key], value)
            if not kinds:
                return False
            node[key] = kinds[0] if len(kinds) == 1 else kinds
        elif key == "required" and isinstance(value, list) and isinstance(node[key], list):
            node[key] = list(dict.fromkeys([*node[key], *value]))
        elif key == "properties" and isinstance(value, dict) and isinstance(node[key], dict):
            props = node[key]
            for name, sub in value.items():
                if name not in props or props[name] == sub:
                    props[name] = copy.deepcopy(sub)
                else:  # both constrain it: the next round merges this allOf in turn
                    props[name] = {"allOf": [props[name], copy.deepcopy(sub)]}
        elif key in _LOWER_BOUNDS | _UPPER_BOUNDS and _both_numbers(node[key], value):
            node[key] = max(node[key], value) if key in _LOWER_BOUNDS else min(node[key], value)
        # any other conflict: keep the node's value, one of the two constraints (looser)
    return True


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))


def _intersect_types(a: Any, b: Any) -> list[str]:
    left = declared_types({"type": a}) or frozenset()
    right = declared_types({"type": b}) or frozenset()
    both = set(left & right)
    if ("number" in left and "integer" in right) or ("number" in right and "integer" in left):
        both.add("integer")
    return sorted(both)


def allow_items(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """minItems beyond prefixItems without ``items``: ``items: {}`` means what the absent
    keyword means, and lets the tier generate further items."""
    node["items"] = {}
    return True


def allow_properties(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """minProperties beyond the declared properties: ``additionalProperties: true`` is what
    the absent keyword means, and lets the tier generate more properties."""
    node["additionalProperties"] = True
    return True


def declare_required(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """required names undeclared properties: declare each as ``{}`` (any value), which is what
    it meant, so the tier generates them."""
    props = node.setdefault("properties", {})
    for name in undeclared_required(node):
        props[name] = {}
    return True


def whole_integer_bounds(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """Fractional bounds on an integer: the nearest whole bounds admit the same integers
    (``minimum: 0.5`` is ``minimum: 1``, ``exclusiveMaximum: 2.5`` is ``exclusiveMaximum:
    3``). Where ``type`` also allows fractions, the bound is dropped instead."""
    if not (declared_types(node) or frozenset()) <= {"integer", "null"}:
        return drop(node, found, low)
    for key in found:
        round_up = key in ("minimum", "exclusiveMaximum")
        node[key] = math.ceil(node[key]) if round_up else math.floor(node[key])
    return True


def drop_empty_kind(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """Bounds that leave no value of one type, where ``type`` allows others too
    (``["integer", "null"]`` with no integer in range): that type is left out of ``type``,
    which admits exactly the same instances. With no other type, nothing is admitted."""
    kinds = declared_types(node) or ALL_TYPES  # without `type`: every other type is fine
    for key in found:
        kinds -= BOUND_KINDS[key] | ({"integer"} if "number" in BOUND_KINDS[key] else set())
    if not kinds:
        return False
    node["type"] = sorted(kinds) if len(kinds) > 1 else next(iter(kinds))
    return True


def true_to_empty(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """``true`` in ``prefixItems`` becomes ``{}``: the same schema, in a form XGrammar takes."""
    node["prefixItems"] = [{} if v is True else v for v in node["prefixItems"]]
    return True


def truncate_prefix(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """prefixItems longer than maxItems: positions past maxItems can never hold an item."""
    node["prefixItems"] = node["prefixItems"][: int(node["maxItems"])]
    return True


def tuple_to_prefix(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """Array-form ``items`` (drafts 4-2019) becomes ``prefixItems``, which XGrammar reads;
    ``additionalItems`` is dropped (it would mean something else in ``items``)."""
    node["prefixItems"] = node.pop("items")
    node.pop("additionalItems", None)
    return True


def drop_false(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """A ``false`` subschema: a property that must be absent is left out (the validator
    rejects it if generated), a ``false`` anyOf/oneOf branch is removed (it matches
    nothing), ``prefixItems`` stop before it; an allOf with ``false`` admits nothing."""
    for key in found:
        value = node[key]
        if key == "properties":
            node[key] = {k: v for k, v in value.items() if v is not False}
        elif key in ("anyOf", "oneOf"):
            kept = [v for v in value if v is not False]
            if not kept:
                return False
            node[key] = kept
        elif key == "prefixItems":
            cut = value.index(False)
            node["prefixItems"] = value[:cut]
            limit = node.get("maxItems")
            node["maxItems"] = cut if not _both_numbers(limit, 0) else min(limit, cut)
            node.pop("items", None)
            if not node["prefixItems"]:
                node.pop("prefixItems")
        else:  # allOf
            return False
    return True


def move_target(node: dict[str, Any], found: list[str], low: Lowering) -> bool:
    """A ``$ref`` XGrammar cannot follow (escaped, into an array, to an anchor): the target
    is copied under ``$defs`` with a plain name and the reference points there."""
    if not isinstance(low.root, dict):
        return False
    target = low.resolve(node["$ref"])
    if target is _MISSING and isinstance(node["$ref"], str):
        target = _anchor(low.root, node["$ref"][1:])
    if target is _MISSING or target is False:
        return False
    node["$ref"] = low.define(target)
    return True


def _anchor(doc: Any, name: str) -> Any:
    """The schema object with ``$anchor: name`` (or ``_MISSING``)."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("$anchor") == name:
                return node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return _MISSING


def drop_data(node: dict[str, Any], data_key: str) -> None:
    """vLLM refuses a keyword it finds in data (``default``, ``enum``, ``const``...): the tier
    gets the schema without that data keyword (looser), the validator applies it."""
    node.pop(data_key, None)
