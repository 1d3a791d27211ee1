"""What the pinned tiers (vLLM 0.33.0 with XGrammar 0.2.8, see ``config/tiers.toml``) do with
each JSON Schema feature, as data. ``gateway.structured.preflight`` walks a client's schema
and applies these rules; nothing here does I/O.

Three verdicts:

* ``REJECT`` rules: the tier refuses the schema, or XGrammar would silently drop the keyword in
  a way the gateway will not pass off as enforced. A rule with a ``lower`` is served by
  lowering (``gateway.structured.lowering``: the tier gets a looser schema, the output is checked
  against the original); without one, or in strict mode, the request gets a 422.
* ``UNENFORCED`` rules: XGrammar compiles the schema but does not constrain generation by the
  keyword. The request goes ahead; the output is checked after generation.
* everything else: enforced token by token.

Each rule names its ``source``: the vLLM function it mirrors, or the XGrammar behaviour observed
by compiling ``example`` (``tests/integration/test_xgrammar_contract.py`` re-checks every one
against the installed XGrammar). When the tiers' vLLM pin moves, re-read the source named here.

>>> [r.id for r in REJECT if "uniqueItems" in r.keywords]
['array-unique-items']

Each rule writes its keywords once (``keywords``): they are what the walk looks for in a schema
object before asking the rule's finder, and, for ``find.present`` rules, all the finder needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from gateway.structured import finders as find
from gateway.structured import lowering as low

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
    """One feature the tier handles badly. ``keywords``: the keywords without which the rule
    cannot fire (the walk asks the rule only about objects holding one); ``find`` returns the
    keywords of one schema object at fault (default: those of ``keywords`` present).
    ``types``: the rule looks only at schemas whose ``type`` may be one of these (empty: every
    schema); ``untyped``: it also looks at schemas with no ``type``. ``lower``: how the
    gateway serves the schema anyway (None: it cannot, 422). ``example`` trips the rule;
    ``violating`` is an instance that breaks ``example`` yet XGrammar lets through (None where
    XGrammar refuses to compile, or vLLM refuses first)."""

    id: str
    keywords: tuple[str, ...]
    types: frozenset[str]
    untyped: bool
    message: str
    source: str
    xgrammar: Verdict
    example: Any
    violating: Any = None
    find: Finder | None = None
    lower: low.LowerFn | None = None
    drafts: frozenset[int] = field(default=frozenset({4, 6, 7, 2019, 2020}))
    typed: bool = True  # False: only schemas without `type` (and no type the position implies)

    @property
    def keyword(self) -> str:
        return self.keywords[0]

    def found(self, obj: Mapping[str, Any]) -> list[str]:
        if self.find is None:
            return [k for k in self.keywords if k in obj]
        return self.find(obj)


_ARRAY, _OBJECT, _STRING, _INTEGER = (frozenset({t}) for t in ("array", "object", "string",
                                                               "integer"))  # fmt: skip

REJECT: Final[tuple[Rule, ...]] = (
    # --- mirrored from vLLM's own check; vLLM applies them only where `type` names the kind,
    # --- XGrammar ignores the keyword where it does not, so the gateway applies them wherever
    # --- the keyword can constrain the instance.
    Rule("number-multiple-of", ("multipleOf",), find.NUM, True,
         "multipleOf is not supported on numbers", VLLM_CHECK, "ignores",
         {"type": "number", "multipleOf": 0.5}, 0.3, lower=low.drop),
    Rule("array-unique-items", ("uniqueItems",), _ARRAY, True,
         "uniqueItems is not supported: generated arrays may repeat items", VLLM_CHECK, "ignores",
         {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, [1, 1],
         lower=low.drop),
    Rule("array-contains", ("contains", "minContains", "maxContains"), _ARRAY, True,
         "contains, minContains and maxContains are not supported on arrays", VLLM_CHECK,
         "ignores", {"type": "array", "items": {"type": "integer"}, "contains": {"const": 1}},
         [2], lower=low.drop),
    Rule("string-format", ("format",), _STRING, True,
         "this string format is not supported; supported: " + ", ".join(sorted(SUPPORTED_FORMATS)),
         VLLM_CHECK, "ignores", {"type": "string", "format": "regex"}, "((",
         find=find.unsupported_format, lower=low.drop),
    Rule("string-length-with-pattern", ("minLength", "maxLength"), _STRING, True,
         "length bounds beside pattern or format are dropped: use one or the other", VLLM_CHECK,
         "ignores", {"type": "string", "pattern": "^a+$", "maxLength": 3}, "aaaaa",
         find=find.length_beside_pattern, lower=low.drop_length),
    Rule("object-property-names", ("propertyNames",), _OBJECT, True,
         "propertyNames cannot be combined with properties, patternProperties, "
         "unevaluatedProperties or a length-bounded pattern, and must be an object",
         VLLM_CHECK, "ignores",
         {"type": "object", "properties": {"abc": {}}, "propertyNames": {"maxLength": 1}},
         {"abc": 1}, find=find.property_names_conflict, lower=low.drop),
    Rule("object-pattern-properties", ("patternProperties",), _OBJECT, True,
         "patternProperties allows one pattern and no properties beside it", VLLM_CHECK,
         "vllm-refuses", {"type": "object", "patternProperties": {"^x": {}, "^y": {}}},
         find=find.pattern_properties_conflict, lower=low.patterns_into_additional),
    Rule("all-of-branches", ("allOf",), find.ANY, True,
         "allOf with more than one branch is not supported: merge the branches into one schema",
         VLLM_CHECK, "ignores", {"allOf": [{"type": "string"}, {"enum": ["yes", "no"]}]}, "maybe",
         find=find.multi_branch_all_of, lower=low.merge_all_of),
    # --- XGrammar 0.2.8 refuses to compile these (vLLM answers 400).
    Rule("array-tuple-items", ("items",), _ARRAY, True,
         "array-form items (drafts 4-2019) is not supported: use prefixItems (2020-12)",
         XGRAMMAR, "rejects",
         {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array",
          "items": [{"type": "integer"}]}, find=find.tuple_items, lower=low.tuple_to_prefix),
    Rule("number-boolean-exclusive", ("exclusiveMinimum", "exclusiveMaximum"), find.NUM, False,
         "boolean exclusiveMinimum/exclusiveMaximum (draft 4) is not supported: give the bound "
         "itself, as in draft 6 and later", XGRAMMAR, "rejects",
         {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number", "minimum": 0,
          "exclusiveMinimum": True}, find=find.boolean_exclusive, lower=low.drop),
    Rule("false-subschema", ("properties", "anyOf", "oneOf", "allOf", "prefixItems"), find.ANY,
         True, "a `false` subschema here is not supported: leave the property or branch out",
         XGRAMMAR, "rejects", {"type": "object", "properties": {"a": False}},
         find=find.false_branch, lower=low.drop_false),
    Rule("empty-enum", ("enum",), find.ANY, True, "an empty enum admits no value",
         XGRAMMAR, "rejects", {"type": "string", "enum": []}, find=find.empty_enum),
    Rule("integer-bound-range", find.BOUNDS, _INTEGER, False,
         "integer bounds must fit in 64 bits (a float bound strictly inside ±2**63)", XGRAMMAR,
         "rejects", {"type": "integer", "maximum": 2**70},
         find=find.integer_bound_out_of_range, lower=low.drop),
    Rule("integer-bound-fraction", find.BOUNDS, _INTEGER, False,
         "bounds on an integer must be whole numbers", XGRAMMAR, "rejects",
         {"type": "integer", "minimum": 0.5}, find=find.fractional_integer_bound,
         lower=low.whole_integer_bounds),
    Rule("contradictory-bounds", ("minimum", "exclusiveMinimum", "minLength", "minItems",
                                  "minProperties", "required"), find.ANY, False,
         "the bounds leave no value of their type (a lower bound above the upper one, an empty "
         "exclusive range, more required properties than maxProperties)", XGRAMMAR, "rejects",
         {"type": ["integer", "null"], "minimum": 5, "maximum": 2},
         find=find.contradictory_bounds, lower=low.drop_empty_kind),
    Rule("prefix-beyond-max-items", ("prefixItems",), _ARRAY, False,
         "prefixItems is longer than maxItems: the tier requires every prefix item", XGRAMMAR,
         "rejects", {"type": "array", "prefixItems": [{}, {}], "maxItems": 1},
         find=find.prefix_beyond_max_items, lower=low.truncate_prefix),
    Rule("prefix-true", ("prefixItems",), _ARRAY, False,
         "a `true` entry in prefixItems is refused by the tier: use {}", XGRAMMAR, "rejects",
         {"type": "array", "prefixItems": [True]}, find=find.true_in_prefix,
         lower=low.true_to_empty),
    Rule("strict-min-items", ("minItems",), _ARRAY, False,
         "minItems needs `items`: without it the tier generates no further items",
         XGRAMMAR, "rejects", {"type": "array", "minItems": 1},
         find=find.min_items_beyond_tuple, lower=low.allow_items),
    Rule("strict-min-properties", ("minProperties",), _OBJECT, False,
         "minProperties exceeds the declared properties and additionalProperties is not given: "
         "the tier generates no undeclared property", XGRAMMAR, "rejects",
         {"type": "object", "properties": {"a": {}}, "minProperties": 2},
         find=find.min_properties_beyond_declared, lower=low.allow_properties),
    Rule("strict-required", ("required",), _OBJECT, False,
         "required names a property missing from properties while additionalProperties is not "
         "given: the tier never generates it", XGRAMMAR, "ignores",
         {"type": "object", "properties": {"a": {}}, "required": ["b"]}, {"a": 1},
         find=find.required_undeclared, lower=low.declare_required),
    Rule("regex-feature", ("pattern", "patternProperties"), find.ANY, True,
         "the pattern uses a regex feature the tier cannot compile (backreference, lookbehind, "
         "\\b, \\p{...}, an atomic group, a group modifier such as (?i:...), an empty class [] "
         "or a NUL character)", XGRAMMAR, "rejects",
         {"type": "string", "pattern": "^(a)\\1$"}, find=find.refused_regex),
    Rule("ref-escaped", ("$ref",), find.ANY, True,
         "a $ref pointer with ~ or % escapes is not resolved by the tier: rename the definition",
         XGRAMMAR, "rejects", {"$defs": {"a/b": {"type": "integer"}}, "$ref": "#/$defs/a~1b"},
         find=find.ref_is("escaped"), lower=low.move_target),
    Rule("ref-into-array", ("$ref",), find.ANY, True,
         "a $ref pointer through an array (#/.../anyOf/0) is not resolved by the tier: point "
         "to a definition under $defs", XGRAMMAR, "rejects",
         {"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}]},
                                           "b": {"$ref": "#/properties/a/anyOf/0"}}},
         find=find.never, lower=low.move_target),
    Rule("ref-false", ("$ref",), find.ANY, True,
         "the $ref points to a `false` schema: it admits no value", XGRAMMAR, "rejects",
         {"$ref": "#/$defs/a", "$defs": {"a": False}}, find=find.never),
    # --- the tier would generate without any constraint where these point.
    Rule("ref-remote", ("$ref",), find.ANY, True,
         "only local references (#/...) are supported: the gateway fetches nothing and the tier "
         "generates unconstrained values", GATEWAY, "ignores",
         {"$ref": "https://example.com/s.json"}, "anything", find=find.ref_is("remote")),
    Rule("ref-anchor", ("$ref",), find.ANY, True,
         "references to anchors are not followed by the tier: use a JSON pointer (#/$defs/...)",
         XGRAMMAR, "ignores",
         {"$defs": {"n": {"$anchor": "n", "type": "integer"}}, "$ref": "#n"}, "s",
         find=find.ref_is("anchor"), lower=low.move_target),
    Rule("ref-dynamic", ("$dynamicRef", "$recursiveRef"), find.ANY, True,
         "dynamic references are not followed by the tier", XGRAMMAR, "ignores",
         {"$defs": {"n": {"$dynamicAnchor": "n", "type": "integer"}}, "$dynamicRef": "#n"}, "s"),
)  # fmt: skip


UNENFORCED: Final[tuple[Rule, ...]] = (
    Rule("not", ("not",), find.ANY, True, "not is checked only after generation",
         XGRAMMAR, "ignores", {"type": "integer", "not": {"const": 3}}, 3),
    Rule("conditional", ("if", "then", "else"), find.ANY, True,
         "if/then/else is checked only after generation", XGRAMMAR, "ignores",
         {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
          "if": {"properties": {"a": {"const": 1}}, "required": ["a"]},
          "then": {"required": ["b"]}}, {"a": 1}),
    Rule("dependencies", ("dependentRequired", "dependentSchemas", "dependencies"), find.ANY,
         True, "dependentRequired/dependentSchemas/dependencies are checked only after "
         "generation", XGRAMMAR, "ignores",
         {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
          "dependentRequired": {"a": ["b"]}}, {"a": 1}),
    Rule("one-of-overlap", ("oneOf",), find.ANY, True,
         "oneOf is generated as anyOf: a value matching two branches is caught only after "
         "generation (disjoint types, or a const tag every branch requires, avoid this)",
         XGRAMMAR, "ignores", {"oneOf": [{"type": "integer"}, {"type": "number"}]}, 3,
         find=find.overlapping_one_of),
    Rule("regex-lookahead", ("pattern", "patternProperties"), find.ANY, True,
         "lookahead in a pattern is skipped during generation and checked after it", XGRAMMAR,
         "ignores", {"type": "string", "pattern": "^(?!a)\\w+$"}, "abc", find=find.skipped_regex),
    Rule("ref-siblings", ("$ref",), find.ANY, True,
         "keywords beside $ref are checked only after generation", XGRAMMAR, "ignores",
         {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n", "minimum": 3}, 1,
         find=find.beside_ref, drafts=frozenset({2019, 2020})),
    Rule("untyped", tuple(k for keys, _ in find.TYPED_KEYWORDS for k in keys), find.ANY, True,
         "without `type` this keyword is checked only after generation: add `type`",
         XGRAMMAR, "ignores", {"minimum": 5}, 3, find=find.untyped_assertions, typed=False),
)  # fmt: skip

# vLLM's check walks every nested object of the schema document, annotation data included.
VLLM_RULE_IDS: Final = frozenset(r.id for r in REJECT if r.source == VLLM_CHECK)
BY_ID: Final[Mapping[str, Rule]] = MappingProxyType({r.id: r for r in REJECT + UNENFORCED})


def _index(group: tuple[Rule, ...]) -> Mapping[str, tuple[Rule, ...]]:
    by_key: dict[str, list[Rule]] = {}
    for rule in group:
        for key in rule.keywords:
            by_key.setdefault(key, []).append(rule)
    return MappingProxyType({k: tuple(v) for k, v in by_key.items()})


REJECT_BY_KEY: Final = _index(REJECT)
UNENFORCED_BY_KEY: Final = _index(UNENFORCED)
