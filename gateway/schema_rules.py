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

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from gateway import schema_finders as find

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

# STRING_SUPPORTED_FORMATS in vLLM 0.33.0's backend_xgrammar.py (kept beside its finder).
SUPPORTED_FORMATS: Final = find.SUPPORTED_FORMATS

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
Finder = find.Finder


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


REJECT: Final[tuple[Rule, ...]] = (
    # --- mirrored from vLLM's own check; vLLM applies them only where `type` names the kind,
    # --- XGrammar ignores the keyword where it does not, so the gateway applies them wherever
    # --- the keyword can constrain the instance.
    Rule("number-multiple-of", "multipleOf", find.NUM, True, find.present("multipleOf"),
         "multipleOf is not supported on numbers", VLLM_CHECK, "ignores",
         {"type": "number", "multipleOf": 0.5}, 0.3),
    Rule("array-unique-items", "uniqueItems", frozenset({"array"}), True,
         find.present("uniqueItems"), "uniqueItems is not supported: generated arrays may repeat "
         "items", VLLM_CHECK, "ignores",
         {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, [1, 1]),
    Rule("array-contains", "contains", frozenset({"array"}), True,
         find.present("contains", "minContains", "maxContains"),
         "contains, minContains and maxContains are not supported on arrays", VLLM_CHECK,
         "ignores", {"type": "array", "items": {"type": "integer"}, "contains": {"const": 1}},
         [2]),
    Rule("string-format", "format", frozenset({"string"}), True, find.unsupported_format,
         "this string format is not supported; supported: " + ", ".join(sorted(SUPPORTED_FORMATS)),
         VLLM_CHECK, "ignores", {"type": "string", "format": "regex"}, "(("),
    Rule("string-length-with-pattern", "maxLength", frozenset({"string"}), True,
         find.length_beside_pattern, "length bounds beside pattern or format are dropped: use one "
         "or the other", VLLM_CHECK, "ignores",
         {"type": "string", "pattern": "^a+$", "maxLength": 3}, "aaaaa"),
    Rule("object-property-names", "propertyNames", frozenset({"object"}), True,
         find.property_names_conflict, "propertyNames cannot be combined with properties, "
         "patternProperties, unevaluatedProperties or a length-bounded pattern", VLLM_CHECK,
         "ignores",
         {"type": "object", "properties": {"abc": {}}, "propertyNames": {"maxLength": 1}},
         {"abc": 1}),
    Rule("object-pattern-properties", "patternProperties", frozenset({"object"}), True,
         find.pattern_properties_conflict, "patternProperties allows one pattern and no properties "
         "beside it", VLLM_CHECK, "vllm-refuses",
         {"type": "object", "patternProperties": {"^x": {}, "^y": {}}}),
    Rule("all-of-branches", "allOf", find.ANY, True, find.multi_branch_all_of,
         "allOf with more than one branch is not supported: merge the branches into one schema",
         VLLM_CHECK, "ignores", {"allOf": [{"type": "string"}, {"enum": ["yes", "no"]}]}, "maybe"),
    # --- XGrammar 0.2.8 refuses to compile these (vLLM answers 400).
    Rule("array-tuple-items", "items", frozenset({"array"}), True, find.tuple_items,
         "array-form items (drafts 4-2019) is not supported: use prefixItems (2020-12)",
         XGRAMMAR, "rejects",
         {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array",
          "items": [{"type": "integer"}]}),
    Rule("number-boolean-exclusive", "exclusiveMinimum", find.NUM, False, find.boolean_exclusive,
         "boolean exclusiveMinimum/exclusiveMaximum (draft 4) is not supported: give the bound "
         "itself, as in draft 6 and later", XGRAMMAR, "rejects",
         {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number", "minimum": 0,
          "exclusiveMinimum": True}),
    Rule("false-subschema", "false", find.ANY, True, find.false_branch,
         "a `false` subschema here is not supported: leave the property or branch out",
         XGRAMMAR, "rejects", {"type": "object", "properties": {"a": False}}),
    Rule("empty-enum", "enum", find.ANY, True, find.empty_enum, "an empty enum admits no value",
         XGRAMMAR, "rejects", {"type": "string", "enum": []}),
    Rule("integer-bound-range", "maximum", frozenset({"integer"}), False,
         find.integer_bound_out_of_range, "integer bounds must fit in 64 bits", XGRAMMAR, "rejects",
         {"type": "integer", "maximum": 2**70}),
    Rule("integer-bound-fraction", "minimum", frozenset({"integer"}), False,
         find.fractional_integer_bound, "bounds on an integer must be whole numbers", XGRAMMAR,
         "rejects", {"type": "integer", "minimum": 0.5}),
    Rule("contradictory-bounds", "minimum", find.ANY, False, find.contradictory_bounds,
         "the lower bound is above the upper bound: no value satisfies it", XGRAMMAR, "rejects",
         {"type": "integer", "minimum": 5, "maximum": 2}),
    Rule("strict-min-items", "minItems", frozenset({"array"}), False, find.min_items_beyond_tuple,
         "minItems needs `items`: without it the tier generates no further items",
         XGRAMMAR, "rejects", {"type": "array", "minItems": 1}),
    Rule("strict-min-properties", "minProperties", frozenset({"object"}), False,
         find.min_properties_beyond_declared, "minProperties exceeds the declared properties and "
         "additionalProperties is not given: the tier generates no undeclared property",
         XGRAMMAR, "rejects", {"type": "object", "properties": {"a": {}}, "minProperties": 2}),
    Rule("strict-required", "required", frozenset({"object"}), False, find.required_undeclared,
         "required names a property missing from properties while additionalProperties is not "
         "given: the tier never generates it", XGRAMMAR, "ignores",
         {"type": "object", "properties": {"a": {}}, "required": ["b"]}, {"a": 1}),
    Rule("regex-feature", "pattern", find.ANY, True, find.refused_regex,
         "the pattern uses a regex feature the tier cannot compile (backreference, lookbehind, "
         "\\b, \\p{...} or an atomic group)", XGRAMMAR, "rejects",
         {"type": "string", "pattern": "^(a)\\1$"}),
    Rule("ref-escaped", "$ref", find.ANY, True, find.ref_is("escaped"),
         "a $ref pointer with ~ or % escapes is not resolved by the tier: rename the definition",
         XGRAMMAR, "rejects", {"$defs": {"a/b": {"type": "integer"}}, "$ref": "#/$defs/a~1b"}),
    # --- the tier would generate without any constraint where these point.
    Rule("ref-remote", "$ref", find.ANY, True, find.ref_is("remote"),
         "only local references (#/...) are supported: the gateway fetches nothing and the tier "
         "generates unconstrained values", GATEWAY, "ignores",
         {"$ref": "https://example.com/s.json"}, "anything"),
    Rule("ref-anchor", "$ref", find.ANY, True, find.ref_is("anchor"),
         "references to anchors are not followed by the tier: use a JSON pointer (#/$defs/...)",
         XGRAMMAR, "ignores",
         {"$defs": {"n": {"$anchor": "n", "type": "integer"}}, "$ref": "#n"}, "s"),
    Rule("ref-dynamic", "$dynamicRef", find.ANY, True, find.present("$dynamicRef", "$recursiveRef"),
         "dynamic references are not followed by the tier", XGRAMMAR, "ignores",
         {"$defs": {"n": {"$dynamicAnchor": "n", "type": "integer"}}, "$dynamicRef": "#n"}, "s"),
)  # fmt: skip


UNENFORCED: Final[tuple[Rule, ...]] = (
    Rule("not", "not", find.ANY, True, find.present("not"), "not is checked only after generation",
         XGRAMMAR, "ignores", {"type": "integer", "not": {"const": 3}}, 3),
    Rule("conditional", "if", find.ANY, True, find.present("if", "then", "else"),
         "if/then/else is checked only after generation", XGRAMMAR, "ignores",
         {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
          "if": {"properties": {"a": {"const": 1}}, "required": ["a"]},
          "then": {"required": ["b"]}}, {"a": 1}),
    Rule("dependencies", "dependentRequired", find.ANY, True,
         find.present("dependentRequired", "dependentSchemas", "dependencies"),
         "dependentRequired/dependentSchemas/dependencies are checked only after generation",
         XGRAMMAR, "ignores",
         {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
          "dependentRequired": {"a": ["b"]}}, {"a": 1}),
    Rule("one-of-overlap", "oneOf", find.ANY, True, find.overlapping_one_of,
         "oneOf is generated as anyOf: a value matching two branches is caught only after "
         "generation (disjoint types, or a const tag every branch requires, avoid this)",
         XGRAMMAR, "ignores", {"oneOf": [{"type": "integer"}, {"type": "number"}]}, 3),
    Rule("regex-lookahead", "pattern", find.ANY, True, find.skipped_regex,
         "lookahead in a pattern is skipped during generation and checked after it", XGRAMMAR,
         "ignores", {"type": "string", "pattern": "^(?!a)\\w+$"}, "abc"),
    Rule("ref-siblings", "$ref", find.ANY, True, find.beside_ref,
         "keywords beside $ref are checked only after generation", XGRAMMAR, "ignores",
         {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n", "minimum": 3}, 1,
         drafts=frozenset({2019, 2020})),
    Rule("untyped", "minimum", find.ANY, True, find.untyped_assertions,
         "without `type` this keyword is checked only after generation: add `type`",
         XGRAMMAR, "ignores", {"minimum": 5}, 3, typed=False),
)  # fmt: skip

# vLLM's check walks every nested object of the schema document, annotation data included.
VLLM_RULE_IDS: Final = frozenset(r.id for r in REJECT if r.source == VLLM_CHECK)

# The keywords without which a rule cannot fire: the walk asks only the rules whose triggers a
# schema object holds (a 100 KB schema has thousands of objects and ~30 rules).
_BOUND_KEYS = find.BOUNDS
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
    "untyped": tuple(k for keys, _ in find.TYPED_KEYWORDS for k in keys),
})  # fmt: skip


def _index(group: tuple[Rule, ...]) -> Mapping[str, tuple[Rule, ...]]:
    by_key: dict[str, list[Rule]] = {}
    for rule in group:
        for key in TRIGGERS[rule.id]:
            by_key.setdefault(key, []).append(rule)
    return MappingProxyType({k: tuple(v) for k, v in by_key.items()})


REJECT_BY_KEY: Final = _index(REJECT)
UNENFORCED_BY_KEY: Final = _index(UNENFORCED)
