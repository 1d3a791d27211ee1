"""Preflight of client schemas: every rule rejects or flags where it should and nowhere else,
faults are named by JSON path and keyword, verdicts are cached in a bounded LRU."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import SchemaInvalid, SchemaUnsupported
from gateway.structured import rules as rules
from gateway.structured.preflight import CheckedSchema, SchemaChecker

DRAFT4 = "http://json-schema.org/draft-04/schema#"
DRAFT7 = "http://json-schema.org/draft-07/schema#"


@pytest.fixture
def checker() -> SchemaChecker:
    return SchemaChecker(cache_size=64)


def faults(checker: SchemaChecker, schema: Any) -> list[tuple[str, str]]:
    """The 422's faults in strict mode (``X-Schema-Mode: strict``): refused outright, or
    refused because serving it needs lowering."""
    with pytest.raises(SchemaUnsupported) as caught:
        checker.check(schema).require_strict()
    assert caught.value.status == 422
    return [(e["path"], e["keyword"]) for e in caught.value.members["errors"]]


def refused(checker: SchemaChecker, schema: Any) -> list[tuple[str, str]]:
    """The 422's faults by default (lowering on): only what no lowering serves."""
    with pytest.raises(SchemaUnsupported) as caught:
        checker.check(schema)
    return [(e["path"], e["keyword"]) for e in caught.value.members["errors"]]


@pytest.mark.parametrize("rule", rules.REJECT, ids=lambda r: r.id)
def test_every_rejecting_rule_refuses_its_own_example_in_strict_mode(
    checker: SchemaChecker, rule: rules.Rule
) -> None:
    with pytest.raises(SchemaUnsupported) as caught:
        checker.check(rule.example).require_strict()
    errors = caught.value.members["errors"]
    assert any(e["source"] == rule.source and e["message"] == rule.message for e in errors)
    assert all(e["path"].startswith("$") and e["keyword"] for e in errors)


@pytest.mark.parametrize("rule", rules.REJECT, ids=lambda r: r.id)
def test_a_rule_with_a_lowering_serves_its_example_and_one_without_refuses(
    checker: SchemaChecker, rule: rules.Rule
) -> None:
    if rule.lower is None:
        with pytest.raises(SchemaUnsupported):
            checker.check(rule.example)
        return
    checked = checker.check(rule.example)
    assert rule.id in {f.rule for f in checked.lowered_at}
    assert checked.tier_schema != rule.example
    # the lowered schema trips no rule: the tier gets it as it is
    again = SchemaChecker().check(checked.tier_schema)
    assert again.lowered_at == ()


@pytest.mark.parametrize("rule", rules.UNENFORCED, ids=lambda r: r.id)
def test_every_unenforced_rule_accepts_and_flags_its_example(
    checker: SchemaChecker, rule: rules.Rule
) -> None:
    checked = checker.check(rule.example)
    assert [f for f in checked.unenforced_at if f.message == rule.message]
    assert set(rule.found(rule.example)) <= set(checked.unenforced)


REJECTED: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    (
        "uniqueItems names its property",
        {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}},
        [("$.properties.tags", "uniqueItems")],
    ),
    ("uniqueItems without type", {"items": {"type": "string"}, "uniqueItems": True},
     [("$", "uniqueItems")]),
    ("uniqueItems on a nullable array", {"type": ["array", "null"], "uniqueItems": True},
     [("$", "uniqueItems")]),
    ("contains family",
     {"type": "array", "contains": {"const": 1}, "minContains": 1, "maxContains": 2},
     [("$", "contains"), ("$", "minContains"), ("$", "maxContains")]),
    ("multipleOf on integer", {"type": "integer", "multipleOf": 3}, [("$", "multipleOf")]),
    ("multipleOf on number", {"type": "number", "multipleOf": 0.5}, [("$", "multipleOf")]),
    ("unsupported format", {"type": "string", "format": "regex"}, [("$", "format")]),
    ("pattern with maxLength", {"type": "string", "pattern": "^a+$", "maxLength": 4},
     [("$", "maxLength")]),
    ("format with both bounds",
     {"type": "string", "format": "email", "minLength": 3, "maxLength": 40},
     [("$", "minLength"), ("$", "maxLength")]),
    ("two patternProperties", {"type": "object", "patternProperties": {"^a": {}, "^b": {}}},
     [("$", "patternProperties")]),
    ("patternProperties beside properties",
     {"type": "object", "properties": {"a": {}}, "patternProperties": {"^x": {}}},
     [("$", "patternProperties")]),
    ("propertyNames beside properties",
     {"type": "object", "properties": {"a": {}}, "propertyNames": {"pattern": "^[a-z]+$"}},
     [("$", "propertyNames")]),
    ("propertyNames with a bounded pattern",
     {"type": "object", "propertyNames": {"pattern": "^x", "maxLength": 3},
      "additionalProperties": {"type": "integer"}},
     [("$", "propertyNames"), ("$.propertyNames", "maxLength")]),
    ("allOf with two branches", {"allOf": [{"type": "string"}, {"maxLength": 3}]},
     [("$", "allOf")]),
    ("remote $ref", {"$ref": "https://example.com/schemas/address.json"}, [("$", "$ref")]),
    ("relative file $ref", {"type": "object", "properties": {"a": {"$ref": "a.json#/x"}}},
     [("$.properties.a", "$ref")]),
    ("$ref to an anchor", {"$defs": {"a": {"$anchor": "a", "type": "string"}}, "$ref": "#a"},
     [("$", "$ref")]),
    ("draft-07 tuple items", {"$schema": DRAFT7, "type": "array", "items": [{"type": "string"}]},
     [("$", "items")]),
    ("draft-04 boolean exclusiveMaximum",
     {"$schema": DRAFT4, "type": "number", "maximum": 1, "exclusiveMaximum": True},
     [("$", "exclusiveMaximum")]),
    ("false property", {"type": "object", "properties": {"a": False}}, [("$", "properties")]),
    ("minItems without items", {"type": "array", "minItems": 1}, [("$", "minItems")]),
    ("required but undeclared",
     {"type": "object", "properties": {"a": {}}, "required": ["a", "b"]}, [("$", "required")]),
    ("backreference", {"type": "string", "pattern": "^(a)\\1$"}, [("$", "pattern")]),
    ("word boundary in patternProperties",
     {"type": "object", "patternProperties": {"\\bx": {}}}, [("$", "patternProperties")]),
    ("bounds the wrong way round", {"type": "string", "minLength": 5, "maxLength": 2},
     [("$", "minLength")]),
    ("integer bound past 64 bits", {"type": "integer", "minimum": -(2**64)}, [("$", "minimum")]),
    (
        "deep in $defs, items, prefixItems and anyOf",
        {
            "$defs": {"d": {"type": "array", "uniqueItems": True}},
            "type": "array",
            "prefixItems": [{"anyOf": [{"type": "number", "multipleOf": 2}, {"type": "null"}]}],
            "items": {"type": "object", "properties": {"x y": {"type": "string", "format": "x"}}},
        },
        [
            ("$.$defs.d", "uniqueItems"),
            ("$.prefixItems[0].anyOf[0]", "multipleOf"),
            ('$.items.properties["x y"]', "format"),
        ],
    ),
    ("vLLM reads annotation data too",
     {"type": "object", "default": {"type": "array", "uniqueItems": True}},
     [("$.default", "uniqueItems")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "expected"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_rejects_and_names_every_fault(
    checker: SchemaChecker, schema: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert sorted(faults(checker, schema)) == sorted(expected)


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("plain object",
     {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
    ("supported format", {"type": "string", "format": "date-time"}),
    ("format on an integer is an annotation", {"type": "integer", "format": "int64"}),
    ("uniqueItems on a string constrains nothing", {"type": "string", "uniqueItems": True}),
    ("length without pattern", {"type": "string", "minLength": 1, "maxLength": 5}),
    ("one patternProperties",
     {"type": "object", "patternProperties": {"^x_": {"type": "integer"}}}),
    ("propertyNames alone", {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}),
    ("allOf with one branch", {"allOf": [{"type": "string"}]}),
    ("local refs and recursion", {
        "$defs": {"node": {"type": "object", "properties": {
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
        "$ref": "#/$defs/node"}),
    ("draft-07 definitions", {"$schema": DRAFT7, "definitions": {"n": {"type": "integer"}},
                              "type": "object", "properties": {"n": {"$ref": "#/definitions/n"}}}),
    ("draft-04 numeric bounds", {"$schema": DRAFT4, "type": "number", "minimum": 0}),
    ("minItems with items", {"type": "array", "items": {"type": "integer"}, "minItems": 2}),
    ("enum and const", {"enum": ["a", 1, None], "default": "a"}),
    ("prefixItems", {"type": "array", "prefixItems": [{"type": "integer"}], "items": False}),
    ("pattern in a class", {"type": "string", "pattern": "^[(?<=]+$"}),
    ("a lone ] in a pattern", {"type": "string", "pattern": "^a]$"}),
    ("a lone } in a pattern", {"type": "string", "pattern": "^a}$"}),
    ("a lone } in patternProperties",
     {"type": "object", "patternProperties": {"^x}": {"type": "integer"}}}),
    ("$ref to the root", {"type": "object", "properties": {"self": {"$ref": "#"}}}),
]  # fmt: skip


@pytest.mark.parametrize("schema", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_accepts_what_the_tier_enforces(checker: SchemaChecker, schema: dict[str, Any]) -> None:
    checked = checker.check(schema)
    assert isinstance(checked, CheckedSchema)
    assert checked.unenforced == ()


@pytest.mark.parametrize(
    ("schema", "unenforced"),
    [
        ({"type": "integer", "not": {"const": 0}}, ("not",)),
        ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]},
          "properties": {"a": {}, "b": {}}}, ("if", "then")),
        ({"type": "object", "properties": {"a": {}, "b": {}},
          "dependentRequired": {"a": ["b"]}}, ("dependentRequired",)),
        ({"type": "object", "additionalProperties": True,
          "dependentSchemas": {"a": {"required": ["b"]}}}, ("dependentSchemas",)),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, ("oneOf",)),
        ({"oneOf": [{"type": "object", "properties": {"a": {}}},
                    {"type": "object", "properties": {"b": {}}}]}, ("oneOf",)),
        ({"type": "string", "pattern": "^(?!x)[a-z]+$"}, ("pattern",)),
        ({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n", "maximum": 9}, ("maximum",)),
        ({"minLength": 2}, ("minLength",)),
    ],
)  # fmt: skip
def test_accepts_and_lists_what_is_checked_only_after_generation(
    checker: SchemaChecker, schema: dict[str, Any], unenforced: tuple[str, ...]
) -> None:
    assert checker.check(schema).unenforced == tuple(sorted(unenforced))


@pytest.mark.parametrize(
    "branches",
    [
        [{"type": "string"}, {"type": "integer"}, {"type": "null"}],
        [{"const": "a"}, {"enum": [1, 2]}],
        [
            {"type": "object", "properties": {"kind": {"const": "cat"}}, "required": ["kind"]},
            {"type": "object", "properties": {"kind": {"const": "dog"}}, "required": ["kind"]},
        ],
    ],
)
def test_disjoint_one_of_is_enforced(checker: SchemaChecker, branches: list[Any]) -> None:
    assert checker.check({"oneOf": branches}).unenforced == ()


def test_ref_siblings_are_ignored_by_the_spec_before_2019(checker: SchemaChecker) -> None:
    schema = {"$schema": DRAFT7, "definitions": {"n": {"type": "integer"}},
              "$ref": "#/definitions/n", "maximum": 9}  # fmt: skip
    assert checker.check(schema).unenforced == ()


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "strng"}, "$.type"),
        ({"type": "object", "properties": {"a": {"minimum": "3"}}}, "$.properties.a.minimum"),
        ({"type": "array", "items": [{"type": "string"}]}, "$.items"),  # 2020-12: a schema
        ({"$schema": "https://example.com/my-meta"}, "$.$schema"),
        ({"$ref": "#/$defs/missing", "$defs": {}}, "$.$ref"),
        ({"properties": {"a": {"$ref": "#/properties/b"}}}, "$.properties.a.$ref"),
        ({"type": "string", "pattern": "(unclosed"}, "$.pattern"),
        ({"type": "string", "pattern": "a[]"}, "$.pattern"),  # the validator cannot compile []
        ({"patternProperties": {"[z-a]": {}}}, '$.patternProperties["[z-a]"]'),
    ],
)
def test_invalid_schema_is_a_400_naming_the_path(
    checker: SchemaChecker, schema: dict[str, Any], path: str
) -> None:
    with pytest.raises(SchemaInvalid) as caught:
        checker.check(schema)
    assert caught.value.status == 400
    assert path in [e["path"] for e in caught.value.members["errors"]]


def test_a_non_object_schema_is_invalid(checker: SchemaChecker) -> None:
    with pytest.raises(SchemaInvalid):
        checker.check(["type", "string"])  # type: ignore[arg-type]


def test_boolean_schemas(checker: SchemaChecker) -> None:
    assert checker.check(True).unenforced == ()
    assert refused(checker, False) == [("$", "false")]


def chain(depth: int) -> dict[str, Any]:
    """``depth`` nested objects: {"not": {"not": ... {}}}."""
    schema: dict[str, Any] = {}
    for _ in range(depth - 1):
        schema = {"not": schema}
    return schema


def test_nesting_limit_is_vllms() -> None:
    checker = SchemaChecker()
    checker.check(chain(rules.MAX_NESTING))
    assert refused(checker, chain(rules.MAX_NESTING + 1)) == [
        ("$" + ".not" * rules.MAX_NESTING, "nesting")
    ]


def test_nesting_far_past_any_limit_is_refused_not_crashed() -> None:
    with pytest.raises(SchemaUnsupported):
        SchemaChecker().check(chain(5000))


def test_cache_hit_returns_the_same_object_for_an_equal_schema(checker: SchemaChecker) -> None:
    first = checker.check({"type": "object", "properties": {"a": {"type": "string"}}})
    again = checker.check({"properties": {"a": {"type": "string"}}, "type": "object"})
    assert again is first
    assert len(first.schema_hash) == 64
    assert checker.check({"type": "string"}).schema_hash != first.schema_hash


def test_cache_is_a_bounded_lru() -> None:
    checker = SchemaChecker(cache_size=2)
    a = checker.check({"type": "string"})
    b = checker.check({"type": "integer"})
    assert checker.check({"type": "string"}) is a  # a is now the most recent
    checker.check({"type": "boolean"})  # evicts b
    assert len(checker) == 2
    assert checker.check({"type": "string"}) is a
    assert checker.check({"type": "integer"}) is not b


def test_clear_forgets_every_verdict(checker: SchemaChecker) -> None:
    first = checker.check({"type": "string"})
    checker.clear()
    assert len(checker) == 0
    assert checker.check({"type": "string"}) is not first


def test_rejections_are_cached_and_raised_afresh(checker: SchemaChecker) -> None:
    schema = {"type": "string", "pattern": "(a)\\1"}
    first = refused(checker, schema)
    assert len(checker) == 1
    assert refused(checker, schema) == first


def test_cache_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="cache_size"):
        SchemaChecker(cache_size=0)


def test_problem_body_carries_every_error(checker: SchemaChecker) -> None:
    with pytest.raises(SchemaUnsupported) as caught:
        checker.check(
            {"type": "array", "uniqueItems": True, "contains": {"const": 1}}
        ).require_strict()
    body = caught.value.problem()
    assert body["status"] == 422
    assert body["type"].endswith("/schema-unsupported")
    assert {e["keyword"] for e in body["errors"]} == {"uniqueItems", "contains"}
    assert all(set(e) == {"path", "keyword", "message", "source"} for e in body["errors"])


# --- issue 18: the classes of wrong verdicts, each with the issue's own example -------------

FALSE_ACCEPTS: list[tuple[str, Any, str]] = [
    ("an empty exclusive integer range",
     {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 6}, "exclusiveMinimum"),
    ("an empty exclusive number range",
     {"type": "number", "exclusiveMinimum": 5, "maximum": 5}, "exclusiveMinimum"),
    ("more required than maxProperties",
     {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a", "b"],
      "maxProperties": 1}, "required"),
    ("a false schema reached through $ref", {"$ref": "#/$defs/a", "$defs": {"a": False}},
     "$ref"),
    ("a group modifier", {"type": "string", "pattern": "(?i:a)"}, "pattern"),
    ("a NUL character", {"type": "string", "pattern": "a\x00"}, "pattern"),
    ("rules at a $ref target outside the schema keywords",
     {"type": "object", "properties": {"a": {"$ref": "#/foo"}},
      "foo": {"type": "integer", "minimum": 5, "maximum": 2}}, "minimum"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "keyword"), [c[1:] for c in FALSE_ACCEPTS], ids=[c[0] for c in FALSE_ACCEPTS]
)
def test_what_no_lowering_serves_is_refused_before_the_tier(
    checker: SchemaChecker, schema: Any, keyword: str
) -> None:
    assert keyword in [k for _, k in refused(checker, schema)]


LOWERED: list[tuple[str, Any, Any]] = [
    ("prefixItems longer than maxItems",
     {"type": "array", "prefixItems": [{"type": "integer"}, {}], "maxItems": 1},
     {"type": "array", "prefixItems": [{"type": "integer"}], "maxItems": 1}),
    ("a boolean propertyNames", {"type": "object", "propertyNames": True}, {"type": "object"}),
    ("a $ref into an array",
     {"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}]},
                                       "b": {"$ref": "#/properties/a/anyOf/0"}}},
     {"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}]},
                                       "b": {"$ref": "#/$defs/lowered0"}},
      "$defs": {"lowered0": {"type": "integer"}}}),
    ("-2**63 as a float on an integer", {"type": "integer", "minimum": -9.223372036854776e18},
     {"type": "integer"}),
    ("a fractional integer bound", {"type": "integer", "minimum": 0.5, "exclusiveMaximum": 2.5},
     {"type": "integer", "minimum": 1, "exclusiveMaximum": 3}),
    ("allOf of $refs merged",
     {"$defs": {"a": {"type": "object", "properties": {"x": {"type": "integer"}},
                      "required": ["x"]},
                "b": {"type": "object", "properties": {"y": {"type": "string"}},
                      "required": ["y"]}},
      "allOf": [{"$ref": "#/$defs/a"}, {"$ref": "#/$defs/b"}]},
     {"$defs": {"a": {"type": "object", "properties": {"x": {"type": "integer"}},
                      "required": ["x"]},
                "b": {"type": "object", "properties": {"y": {"type": "string"}},
                      "required": ["y"]}},
      "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "string"}},
      "required": ["x", "y"]}),
    ("required undeclared is declared",
     {"type": "object", "properties": {"a": {}}, "required": ["a", "b"]},
     {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a", "b"]}),
    ("patternProperties beside properties folded into additionalProperties",
     {"type": "object", "properties": {"a": {}}, "patternProperties": {"^x": {"type": "integer"}},
      "additionalProperties": False},
     {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "integer"}}),
    ("length beside a repeated-character pattern folds into it",
     {"type": "string", "pattern": "^a+$", "maxLength": 3},
     {"type": "string", "pattern": "^a{1,3}$"}),
    ("length beside another pattern: the pattern stays",
     {"type": "string", "pattern": "^[A-Z][a-z]+$", "minLength": 2, "maxLength": 6},
     {"type": "string", "pattern": "^[A-Z][a-z]+$"}),
    ("no integer in range beside null: integer leaves the type",
     {"type": ["integer", "null"], "exclusiveMinimum": -2, "exclusiveMaximum": -1},
     {"type": "null", "exclusiveMinimum": -2, "exclusiveMaximum": -1}),
    ("vLLM's refusal inside default drops the default",
     {"type": "object", "default": {"type": "array", "uniqueItems": True}}, {"type": "object"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "lowered"), [c[1:] for c in LOWERED], ids=[c[0] for c in LOWERED]
)
def test_lowered_schemas(checker: SchemaChecker, schema: Any, lowered: Any) -> None:
    checked = checker.check(schema)
    assert checked.tier_schema == lowered
    assert checked.lowered_at
    assert checked.schema == schema  # the output is validated against the original


FALSE_REFUSALS: list[tuple[str, Any]] = [
    ("required declared in anyOf branches",
     {"type": "object", "properties": {"a": {}}, "required": ["b"],
      "anyOf": [{"properties": {"b": {}}}]}),
    ("required declared in oneOf branches",
     {"type": "object", "required": ["kind"],
      "oneOf": [{"properties": {"kind": {"const": "a"}}}, {"properties": {"kind": {"const": "b"}}}]}),
    ("required beside a draft-07 $ref whose target declares it",
     {"$schema": DRAFT7, "definitions": {"p": {"type": "object", "properties": {"a": {}}}},
      "type": "object", "$ref": "#/definitions/p", "required": ["a"]}),
    ("bounds on another type mean nothing", {"type": "string", "minimum": 5, "maximum": 2}),
    ("bounds beside const are never read by XGrammar",
     {"type": "integer", "minimum": 5, "maximum": 2, "const": 1}),
    ("minItems beside anyOf is never read by XGrammar",
     {"type": "array", "minItems": 1, "anyOf": [{"items": {"type": "integer"}}]}),
]  # fmt: skip


@pytest.mark.parametrize(
    "schema", [c[1] for c in FALSE_REFUSALS], ids=[c[0] for c in FALSE_REFUSALS]
)
def test_what_xgrammar_never_reads_is_not_refused(checker: SchemaChecker, schema: Any) -> None:
    checked = checker.check(schema)
    checked.require_strict()  # not even strict mode refuses it
    assert checked.lowered_at == ()


def test_a_non_string_format_inside_data_is_no_crash(checker: SchemaChecker) -> None:
    checked = checker.check({"const": {"type": "string", "format": {"a": 1}}})
    assert [f.keyword for f in checked.lowered_at] == ["format"]
    assert checked.tier_schema == {}


def test_nesting_counts_a_dependencies_array() -> None:
    schema: dict[str, Any] = {"$schema": DRAFT7, "dependencies": {"a": ["b"]}}
    for _ in range(rules.MAX_NESTING // 2 - 1):
        schema = {"$schema": DRAFT7, "properties": {"p": schema}}
    with pytest.raises(SchemaUnsupported) as caught:
        SchemaChecker().check(schema)
    assert caught.value.members["errors"][0]["keyword"] == "nesting"


def test_every_invalid_schema_error_names_its_keyword(checker: SchemaChecker) -> None:
    for schema in ({"type": "strng"}, {"type": "string", "pattern": "(x"},
                   {"$ref": "#/nowhere"}, {"$schema": "https://example.com/x"}):  # fmt: skip
        with pytest.raises(SchemaInvalid) as caught:
            checker.check(schema)
        assert all(e["keyword"] for e in caught.value.members["errors"])


def test_a_long_message_keeps_its_reason(checker: SchemaChecker) -> None:
    schema = {"type": "object", "properties": {"a": {"minimum": {"x": "y" * 1000}}}}
    with pytest.raises(SchemaInvalid) as caught:
        checker.check(schema)
    message = caught.value.members["errors"][0]["message"]
    assert len(message) <= 300
    assert message.endswith('is not of type "number"')
