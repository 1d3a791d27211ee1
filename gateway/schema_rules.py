"""What the pinned tiers (vLLM 0.33.0 with XGrammar 0.2.8, see ``config/tiers.toml``) do with
each JSON Schema feature, as data. ``gateway.schema_check`` walks a client's schema and applies
these rules; nothing here does I/O.

Three verdicts:

* ``REJECT`` rules: the tier refuses the schema, or XGrammar would silently drop the keyword in
  a way the gateway will not pass off as enforced. The request gets a 422 naming every keyword.
* ``UNENFORCED`` rules: XGrammar compiles the schema but does not constrain generation by the
  keyword. The request goes ahead; the output is checked after generation.
* everything else: enforced token by token.

Each rule names its ``source``: the vLLM function it mirrors, or the XGrammar behaviour observed
by compiling ``example`` (``tests/integration/test_xgrammar_contract.py`` re-checks every one
against the installed XGrammar). When the tiers' vLLM pin moves, re-read the source named here.

>>> [r.id for r in REJECT if r.keyword == "uniqueItems"]
['array-unique-items']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from jsonschema_rs.canonical import json as canonical_json

VLLM_VERSION: Final = "0.33.0"
XGRAMMAR_VERSION: Final = "0.2.8"

_VLLM = f"vllm {VLLM_VERSION} vllm/v1/structured_output/backend_xgrammar.py"
VLLM_CHECK: Final = f"{_VLLM}::has_xgrammar_unsupported_json_features"
VLLM_NESTING: Final = f"vllm {VLLM_VERSION} vllm/sampling_params.py::check_json_nesting"
XGRAMMAR: Final = f"xgrammar {XGRAMMAR_VERSION} GrammarCompiler.compile_json_schema (strict mode)"
GATEWAY: Final = "gateway policy"

# vLLM rejects a schema nested deeper than this (MAX_STRUCTURED_OUTPUT_JSON_NESTING), counting
# every object and array in the schema document, annotations included.
MAX_NESTING: Final = 64

# STRING_SUPPORTED_FORMATS in vLLM 0.33.0's backend_xgrammar.py.
SUPPORTED_FORMATS: Final = frozenset(
    {
        "email", "date", "time", "date-time", "duration", "ipv4", "ipv6", "hostname", "uuid",
        "uri", "uri-reference", "uri-template", "json-pointer", "relative-json-pointer",
    }
)  # fmt: skip

# `$schema` values the gateway understands; anything else is a 400 (the gateway fetches no
# meta-schema). The value is what `draft` means throughout: 4, 6, 7, 2019 or 2020.
DRAFTS: Final[Mapping[str, int]] = {
    "http://json-schema.org/draft-04/schema": 4,
    "http://json-schema.org/draft-06/schema": 6,
    "http://json-schema.org/draft-07/schema": 7,
    "https://json-schema.org/draft/2019-09/schema": 2019,
    "https://json-schema.org/draft/2020-12/schema": 2020,
}
DEFAULT_DRAFT: Final = 2020

Verdict = Literal["rejects", "ignores", "vllm-refuses"]
Finder = Callable[[Mapping[str, Any]], list[str]]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_NUM = frozenset({"number", "integer"})
_ANY: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Rule:
    """One feature the tier handles badly. ``find`` returns the keywords of one schema object
    at fault (empty: none). ``types``: the rule looks only at schemas whose ``type`` may be one
    of these (empty: every schema); ``untyped``: it also looks at schemas with no ``type``.
    ``example`` trips the rule; ``violating`` is an instance that breaks ``example`` yet
    XGrammar lets through (None where XGrammar refuses to compile, or vLLM refuses first)."""

    id: str
    keyword: str
    types: frozenset[str]
    untyped: bool
    find: Finder
    message: str
    source: str
    xgrammar: Verdict
    example: Any
    violating: Any = None
    drafts: frozenset[int] = field(default=frozenset({4, 6, 7, 2019, 2020}))
    typed: bool = True  # False: only schemas without `type` (and no type the position implies)


def _present(*keys: str) -> Finder:
    return lambda obj: [k for k in keys if k in obj]


def _length_beside_pattern(obj: Mapping[str, Any]) -> list[str]:
    if "pattern" in obj or "format" in obj:
        return [k for k in ("minLength", "maxLength") if k in obj]
    return []


def _unsupported_format(obj: Mapping[str, Any]) -> list[str]:
    fmt = obj.get("format")
    return ["format"] if "format" in obj and fmt not in SUPPORTED_FORMATS else []


def _property_names_conflict(obj: Mapping[str, Any]) -> list[str]:
    if "propertyNames" not in obj:
        return []
    names = obj["propertyNames"]
    if (
        (isinstance(names, dict) and _length_beside_pattern(names))
        or "patternProperties" in obj
        or "properties" in obj
        or obj.get("unevaluatedProperties", True) is not True
    ):
        return ["propertyNames"]
    return []


def _pattern_properties_conflict(obj: Mapping[str, Any]) -> list[str]:
    pp = obj.get("patternProperties")
    if isinstance(pp, dict) and ("properties" in obj or len(pp) > 1):
        return ["patternProperties"]
    return []


def _multi_branch_all_of(obj: Mapping[str, Any]) -> list[str]:
    branches = obj.get("allOf")
    return ["allOf"] if isinstance(branches, list) and len(branches) >= 2 else []


def _tuple_items(obj: Mapping[str, Any]) -> list[str]:
    return ["items"] if isinstance(obj.get("items"), list) else []


def _boolean_exclusive(obj: Mapping[str, Any]) -> list[str]:
    return [k for k in ("exclusiveMinimum", "exclusiveMaximum") if isinstance(obj.get(k), bool)]


def _false_branch(obj: Mapping[str, Any]) -> list[str]:
    found = []
    props = obj.get("properties")
    if isinstance(props, dict) and any(v is False for v in props.values()):
        found.append("properties")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        value = obj.get(key)
        if isinstance(value, list) and any(v is False for v in value):
            found.append(key)
    return found


def _empty_enum(obj: Mapping[str, Any]) -> list[str]:
    return ["enum"] if obj.get("enum") == [] else []


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer_bound_out_of_range(obj: Mapping[str, Any]) -> list[str]:
    return [
        k for k in _BOUNDS if k in obj and _number(obj[k]) and not INT64_MIN <= obj[k] <= INT64_MAX
    ]


def _fractional_integer_bound(obj: Mapping[str, Any]) -> list[str]:
    return [
        k for k in _BOUNDS if k in obj and isinstance(obj[k], float) and not obj[k].is_integer()
    ]


def _contradictory_bounds(obj: Mapping[str, Any]) -> list[str]:
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


def _min_items_beyond_tuple(obj: Mapping[str, Any]) -> list[str]:
    if not _closed(obj, "items", "unevaluatedItems") or isinstance(obj.get("items"), list):
        return []
    prefix = obj.get("prefixItems", [])
    limit = len(prefix) if isinstance(prefix, list) else 0
    return ["minItems"] if _number(obj.get("minItems")) and obj["minItems"] > limit else []


def _closed_object(obj: Mapping[str, Any]) -> bool:
    return _closed(obj, "additionalProperties", "unevaluatedProperties") and not obj.get(
        "patternProperties"
    )


def _min_properties_beyond_declared(obj: Mapping[str, Any]) -> list[str]:
    props = obj.get("properties", {})
    count = len(props) if isinstance(props, dict) else 0
    if _closed_object(obj) and _number(obj.get("minProperties")) and obj["minProperties"] > count:
        return ["minProperties"]
    return []


def _required_undeclared(obj: Mapping[str, Any]) -> list[str]:
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


def _refused_regex(obj: Mapping[str, Any]) -> list[str]:
    return [k for k, p in _patterns(obj) if _REGEX_REFUSED.search(_outside_classes(p))]


def _skipped_regex(obj: Mapping[str, Any]) -> list[str]:
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


def _ref_is(kind: str) -> Finder:
    return lambda obj: ["$ref"] if _ref_kind(obj) == kind else []


REJECT: Final[tuple[Rule, ...]] = (
    # --- mirrored from vLLM's own check; vLLM applies them only where `type` names the kind,
    # --- XGrammar ignores the keyword where it does not, so the gateway applies them wherever
    # --- the keyword can constrain the instance.
    Rule("number-multiple-of", "multipleOf", _NUM, True, _present("multipleOf"),
         "multipleOf is not supported on numbers", VLLM_CHECK, "ignores",
         {"type": "number", "multipleOf": 0.5}, 0.3),
    Rule("array-unique-items", "uniqueItems", frozenset({"array"}), True,
         _present("uniqueItems"), "uniqueItems is not supported: generated arrays may repeat "
         "items", VLLM_CHECK, "ignores",
         {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, [1, 1]),
    Rule("array-contains", "contains", frozenset({"array"}), True,
         _present("contains", "minContains", "maxContains"),
         "contains, minContains and maxContains are not supported on arrays", VLLM_CHECK,
         "ignores", {"type": "array", "items": {"type": "integer"}, "contains": {"const": 1}},
         [2]),
    Rule("string-format", "format", frozenset({"string"}), True, _unsupported_format,
         "this string format is not supported; supported: " + ", ".join(sorted(SUPPORTED_FORMATS)),
         VLLM_CHECK, "ignores", {"type": "string", "format": "regex"}, "(("),
    Rule("string-length-with-pattern", "maxLength", frozenset({"string"}), True,
         _length_beside_pattern, "length bounds beside pattern or format are dropped: use one "
         "or the other", VLLM_CHECK, "ignores",
         {"type": "string", "pattern": "^a+$", "maxLength": 3}, "aaaaa"),
    Rule("object-property-names", "propertyNames", frozenset({"object"}), True,
         _property_names_conflict, "propertyNames cannot be combined with properties, "
         "patternProperties, unevaluatedProperties or a length-bounded pattern", VLLM_CHECK,
         "ignores",
         {"type": "object", "properties": {"abc": {}}, "propertyNames": {"maxLength": 1}},
         {"abc": 1}),
    Rule("object-pattern-properties", "patternProperties", frozenset({"object"}), True,
         _pattern_properties_conflict, "patternProperties allows one pattern and no properties "
         "beside it", VLLM_CHECK, "vllm-refuses",
         {"type": "object", "patternProperties": {"^x": {}, "^y": {}}}),
    Rule("all-of-branches", "allOf", _ANY, True, _multi_branch_all_of,
         "allOf with more than one branch is not supported: merge the branches into one schema",
         VLLM_CHECK, "ignores", {"allOf": [{"type": "string"}, {"enum": ["yes", "no"]}]}, "maybe"),
    # --- XGrammar 0.2.8 refuses to compile these (vLLM answers 400).
    Rule("array-tuple-items", "items", frozenset({"array"}), True, _tuple_items,
         "array-form items (drafts 4-2019) is not supported: use prefixItems (2020-12)",
         XGRAMMAR, "rejects",
         {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array",
          "items": [{"type": "integer"}]}),
    Rule("number-boolean-exclusive", "exclusiveMinimum", _NUM, False, _boolean_exclusive,
         "boolean exclusiveMinimum/exclusiveMaximum (draft 4) is not supported: give the bound "
         "itself, as in draft 6 and later", XGRAMMAR, "rejects",
         {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number", "minimum": 0,
          "exclusiveMinimum": True}),
    Rule("false-subschema", "false", _ANY, True, _false_branch,
         "a `false` subschema here is not supported: leave the property or branch out",
         XGRAMMAR, "rejects", {"type": "object", "properties": {"a": False}}),
    Rule("empty-enum", "enum", _ANY, True, _empty_enum, "an empty enum admits no value",
         XGRAMMAR, "rejects", {"type": "string", "enum": []}),
    Rule("integer-bound-range", "maximum", frozenset({"integer"}), False,
         _integer_bound_out_of_range, "integer bounds must fit in 64 bits", XGRAMMAR, "rejects",
         {"type": "integer", "maximum": 2**70}),
    Rule("integer-bound-fraction", "minimum", frozenset({"integer"}), False,
         _fractional_integer_bound, "bounds on an integer must be whole numbers", XGRAMMAR,
         "rejects", {"type": "integer", "minimum": 0.5}),
    Rule("contradictory-bounds", "minimum", _ANY, False, _contradictory_bounds,
         "the lower bound is above the upper bound: no value satisfies it", XGRAMMAR, "rejects",
         {"type": "integer", "minimum": 5, "maximum": 2}),
    Rule("strict-min-items", "minItems", frozenset({"array"}), False, _min_items_beyond_tuple,
         "minItems needs `items`: without it the tier generates no further items",
         XGRAMMAR, "rejects", {"type": "array", "minItems": 1}),
    Rule("strict-min-properties", "minProperties", frozenset({"object"}), False,
         _min_properties_beyond_declared, "minProperties exceeds the declared properties and "
         "additionalProperties is not given: the tier generates no undeclared property",
         XGRAMMAR, "rejects", {"type": "object", "properties": {"a": {}}, "minProperties": 2}),
    Rule("strict-required", "required", frozenset({"object"}), False, _required_undeclared,
         "required names a property missing from properties while additionalProperties is not "
         "given: the tier never generates it", XGRAMMAR, "ignores",
         {"type": "object", "properties": {"a": {}}, "required": ["b"]}, {"a": 1}),
    Rule("regex-feature", "pattern", _ANY, True, _refused_regex,
         "the pattern uses a regex feature the tier cannot compile (backreference, lookbehind, "
         "\\b, \\p{...} or an atomic group)", XGRAMMAR, "rejects",
         {"type": "string", "pattern": "^(a)\\1$"}),
    Rule("ref-escaped", "$ref", _ANY, True, _ref_is("escaped"),
         "a $ref pointer with ~ or % escapes is not resolved by the tier: rename the definition",
         XGRAMMAR, "rejects", {"$defs": {"a/b": {"type": "integer"}}, "$ref": "#/$defs/a~1b"}),
    # --- the tier would generate without any constraint where these point.
    Rule("ref-remote", "$ref", _ANY, True, _ref_is("remote"),
         "only local references (#/...) are supported: the gateway fetches nothing and the tier "
         "generates unconstrained values", GATEWAY, "ignores",
         {"$ref": "https://example.com/s.json"}, "anything"),
    Rule("ref-anchor", "$ref", _ANY, True, _ref_is("anchor"),
         "references to anchors are not followed by the tier: use a JSON pointer (#/$defs/...)",
         XGRAMMAR, "ignores",
         {"$defs": {"n": {"$anchor": "n", "type": "integer"}}, "$ref": "#n"}, "s"),
    Rule("ref-dynamic", "$dynamicRef", _ANY, True, _present("$dynamicRef", "$recursiveRef"),
         "dynamic references are not followed by the tier", XGRAMMAR, "ignores",
         {"$defs": {"n": {"$dynamicAnchor": "n", "type": "integer"}}, "$dynamicRef": "#n"}, "s"),
)  # fmt: skip


# Schema keywords whose presence beside `$ref` changes nothing XGrammar would have to enforce.
REF_NEIGHBOURS_IGNORED: Final = frozenset(
    {
        "$ref", "$schema", "$id", "$anchor", "$dynamicAnchor", "$defs", "definitions",
        "$comment", "$vocabulary", "title", "description", "default", "examples", "deprecated",
        "readOnly", "writeOnly",
    }
)  # fmt: skip


def _beside_ref(obj: Mapping[str, Any]) -> list[str]:
    if "$ref" not in obj:
        return []
    return [k for k in obj if k not in REF_NEIGHBOURS_IGNORED]


_TYPED_KEYWORDS: Final = (
    (("minLength", "maxLength", "pattern", "format"), "string"),
    (("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"), "number"),
    (("minItems", "maxItems"), "array"),
    (("required", "minProperties", "maxProperties"), "object"),
)
_SHAPES: Final = {
    "object": ("properties", "additionalProperties", "patternProperties"),
    "array": ("items", "prefixItems"),
}


def _untyped_assertions(obj: Mapping[str, Any]) -> list[str]:
    """XGrammar reads a schema with no ``type`` as any value (or as an object or array where
    ``properties`` or ``items`` give the shape away) and drops the other kinds' keywords."""
    shape = {kind for kind, keys in _SHAPES.items() if any(k in obj for k in keys)}
    return [k for keys, kind in _TYPED_KEYWORDS if kind not in shape for k in keys if k in obj]


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


def _overlapping_one_of(obj: Mapping[str, Any]) -> list[str]:
    branches = obj.get("oneOf")
    return ["oneOf"] if isinstance(branches, list) and _overlapping(branches) else []


UNENFORCED: Final[tuple[Rule, ...]] = (
    Rule("not", "not", _ANY, True, _present("not"), "not is checked only after generation",
         XGRAMMAR, "ignores", {"type": "integer", "not": {"const": 3}}, 3),
    Rule("conditional", "if", _ANY, True, _present("if", "then", "else"),
         "if/then/else is checked only after generation", XGRAMMAR, "ignores",
         {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
          "if": {"properties": {"a": {"const": 1}}, "required": ["a"]},
          "then": {"required": ["b"]}}, {"a": 1}),
    Rule("dependencies", "dependentRequired", _ANY, True,
         _present("dependentRequired", "dependentSchemas", "dependencies"),
         "dependentRequired/dependentSchemas/dependencies are checked only after generation",
         XGRAMMAR, "ignores",
         {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
          "dependentRequired": {"a": ["b"]}}, {"a": 1}),
    Rule("one-of-overlap", "oneOf", _ANY, True, _overlapping_one_of,
         "oneOf is generated as anyOf: a value matching two branches is caught only after "
         "generation (disjoint types, or a const tag every branch requires, avoid this)",
         XGRAMMAR, "ignores", {"oneOf": [{"type": "integer"}, {"type": "number"}]}, 3),
    Rule("regex-lookahead", "pattern", _ANY, True, _skipped_regex,
         "lookahead in a pattern is skipped during generation and checked after it", XGRAMMAR,
         "ignores", {"type": "string", "pattern": "^(?!a)\\w+$"}, "abc"),
    Rule("ref-siblings", "$ref", _ANY, True, _beside_ref,
         "keywords beside $ref are checked only after generation", XGRAMMAR, "ignores",
         {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n", "minimum": 3}, 1,
         drafts=frozenset({2019, 2020})),
    Rule("untyped", "minimum", _ANY, True, _untyped_assertions,
         "without `type` this keyword is checked only after generation: add `type`",
         XGRAMMAR, "ignores", {"minimum": 5}, 3, typed=False),
)  # fmt: skip

# vLLM's check walks every nested object of the schema document, annotation data included.
VLLM_RULE_IDS: Final = frozenset(r.id for r in REJECT if r.source == VLLM_CHECK)

# The keywords without which a rule cannot fire: the walk asks only the rules whose triggers a
# schema object holds (a 100 KB schema has thousands of objects and ~30 rules).
_BOUND_KEYS = _BOUNDS
TRIGGERS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "number-multiple-of": ("multipleOf",),
    "array-unique-items": ("uniqueItems",),
    "array-contains": ("contains", "minContains", "maxContains"),
    "string-format": ("format",),
    "string-length-with-pattern": ("minLength", "maxLength"),
    "object-property-names": ("propertyNames",),
    "object-pattern-properties": ("patternProperties",),
    "all-of-branches": ("allOf",),
    "array-tuple-items": ("items",),
    "number-boolean-exclusive": ("exclusiveMinimum", "exclusiveMaximum"),
    "false-subschema": ("properties", "anyOf", "oneOf", "allOf", "prefixItems"),
    "empty-enum": ("enum",),
    "integer-bound-range": _BOUND_KEYS,
    "integer-bound-fraction": _BOUND_KEYS,
    "contradictory-bounds": ("minimum", "minLength", "minItems", "minProperties"),
    "strict-min-items": ("minItems",),
    "strict-min-properties": ("minProperties",),
    "strict-required": ("required",),
    "regex-feature": ("pattern", "patternProperties"),
    "ref-escaped": ("$ref",),
    "ref-remote": ("$ref",),
    "ref-anchor": ("$ref",),
    "ref-dynamic": ("$dynamicRef", "$recursiveRef"),
    "not": ("not",),
    "conditional": ("if", "then", "else"),
    "dependencies": ("dependentRequired", "dependentSchemas", "dependencies"),
    "one-of-overlap": ("oneOf",),
    "regex-lookahead": ("pattern", "patternProperties"),
    "ref-siblings": ("$ref",),
    "untyped": tuple(k for keys, _ in _TYPED_KEYWORDS for k in keys),
})  # fmt: skip


def _index(group: tuple[Rule, ...]) -> Mapping[str, tuple[Rule, ...]]:
    by_key: dict[str, list[Rule]] = {}
    for rule in group:
        for key in TRIGGERS[rule.id]:
            by_key.setdefault(key, []).append(rule)
    return MappingProxyType({k: tuple(v) for k, v in by_key.items()})


REJECT_BY_KEY: Final = _index(REJECT)
UNENFORCED_BY_KEY: Final = _index(UNENFORCED)
