"""The preflight's rule data against the real XGrammar the tiers run (vLLM 0.33.0 pins 0.2.8).

Compiles through ``GrammarCompiler.compile_json_schema`` with vLLM's arguments (any whitespace,
strict mode) and matches strings with a ``GrammarMatcher``: whether a grammar admits an output
does not depend on the vocabulary, so an empty ``TokenizerInfo`` keeps this fast (no model).

* every rule's ``example`` gets the verdict the rule claims: XGrammar refuses it, or compiles
  it yet lets the rule's ``violating`` instance through (the output the gateway would otherwise
  have handed back), or compiles it and vLLM's own check is what refuses it;
* every lowered schema (each rule's example, each corpus schema) compiles: what the tier gets
  after lowering is something it takes;
* for every schema in ``tests/data/schemas``: where XGrammar refuses, the preflight refuses in
  strict mode too, and the preflight's verdict (and what it lowered) is the one the corpus
  manifest records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import OutputInvalid, SchemaInvalid, SchemaUnsupported
from gateway.structured import rules as rules
from gateway.structured.preflight import SchemaChecker

xgr = pytest.importorskip("xgrammar")

CORPUS = Path(__file__).parents[1] / "data" / "schemas"
MANIFEST: dict[str, dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text())


@pytest.fixture(scope="module")
def compiler() -> Any:
    return xgr.GrammarCompiler(xgr.TokenizerInfo([]), cache_enabled=False)


def compile_like_vllm(compiler: Any, schema: Any) -> Any:
    """What vLLM's XgrammarBackend.compile_grammar does for a json_schema request."""
    return compiler.compile_json_schema(json.dumps(schema), any_whitespace=True)


def admits(compiled: Any, instance: Any) -> bool:
    matcher = xgr.GrammarMatcher(compiled, terminate_without_stop_token=True)
    return bool(matcher.accept_string(json.dumps(instance)) and matcher.is_terminated())


def test_xgrammar_is_the_pinned_version() -> None:
    from xgrammar import _version  # the wheel's own record of its version

    assert _version.version == rules.XGRAMMAR_VERSION


@pytest.mark.parametrize("rule", rules.REJECT + rules.UNENFORCED, ids=lambda r: r.id)
def test_rule_verdict_matches_xgrammar(compiler: Any, rule: rules.Rule) -> None:
    if rule.xgrammar == "rejects":
        with pytest.raises(RuntimeError):
            compile_like_vllm(compiler, rule.example)
        return
    compiled = compile_like_vllm(compiler, rule.example)
    if rule.xgrammar == "vllm-refuses":
        assert rule.source == rules.VLLM_CHECK
        return
    # "ignores": XGrammar lets through an output that breaks the schema ...
    assert rule.violating is not None
    assert admits(compiled, rule.violating)
    if rule.id == "ref-remote":
        return  # the validator cannot resolve it either: the reason the gateway refuses it
    # ... and the validator the gateway uses after generation does catch it.
    assert not jsonschema_rs.validator_for(rule.example, validate_formats=True).is_valid(
        rule.violating
    )


@pytest.mark.parametrize("rule", rules.UNENFORCED, ids=lambda r: r.id)
def test_what_xgrammar_lets_through_the_gateway_catches(rule: rules.Rule) -> None:
    checked = SchemaChecker().check(rule.example)
    with pytest.raises(OutputInvalid) as caught:
        checked.validate_output(json.dumps(rule.violating), "stop")
    assert caught.value.members["reason"] == "schema-violation"


def test_overlapping_one_of_is_generated_as_any_of(compiler: Any) -> None:
    schema = {"oneOf": [{"type": "integer"}, {"type": "number"}]}
    assert admits(compile_like_vllm(compiler, schema), 3)  # matches both branches
    assert SchemaChecker().check(schema).unenforced == ("oneOf",)


@pytest.mark.parametrize("rule", [r for r in rules.REJECT if r.lower], ids=lambda r: r.id)
def test_every_rules_lowered_example_compiles(compiler: Any, rule: rules.Rule) -> None:
    lowered = SchemaChecker().check(rule.example).tier_schema
    compile_like_vllm(compiler, lowered)


def preflight(schema: Any) -> tuple[str, dict[str, list[str]]]:
    """The verdict and the keywords it names (refused ones, or those checked afterwards and
    those lowered)."""
    try:
        checked = SchemaChecker().check(schema)
    except SchemaUnsupported as exc:
        return "unsupported", {"keywords": sorted({e["keyword"] for e in exc.members["errors"]})}
    except SchemaInvalid:
        return "invalid", {}
    named = {"unenforced": list(checked.unenforced), "lowered": list(checked.lowered_keywords)}
    return "accepted", {k: v for k, v in named.items() if v}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_preflight_agrees_with_xgrammar(compiler: Any, name: str) -> None:
    schema = json.loads((CORPUS / name).read_text())
    expected = MANIFEST[name]
    try:
        compile_like_vllm(compiler, schema)
        xgrammar_refuses = False
    except RuntimeError:
        xgrammar_refuses = True
    verdict, named = preflight(schema)
    if xgrammar_refuses:
        with pytest.raises(SchemaUnsupported):  # strict mode refuses what the tier refuses
            SchemaChecker().check(schema).require_strict()
    if verdict == "accepted":  # what the tier gets compiles
        compile_like_vllm(compiler, SchemaChecker().check(schema).tier_schema)
    assert verdict == expected["expect"]
    for key in ("unenforced", "lowered", "keywords"):
        assert named.get(key, []) == expected.get(key, []), key


def test_corpus_manifest_covers_every_file() -> None:
    files = [p.name for p in CORPUS.glob("*.json") if p.name != "manifest.json"]
    assert sorted(MANIFEST) == sorted(files)


def test_formats_are_shapes_in_xgrammar_and_the_validator_checks_the_rest(compiler: Any) -> None:
    schema = {"type": "string", "format": "date"}
    compiled = compile_like_vllm(compiler, schema)
    assert not admits(compiled, "2026-13-01")  # the month is part of the grammar
    assert admits(compiled, "2026-02-30")  # the calendar is not
    with pytest.raises(OutputInvalid):
        SchemaChecker().check(schema).validate_output('"2026-02-30"', "stop")


# --- random schemas: whatever the preflight serves, XGrammar compiles ----------------------

_num = st.one_of(st.integers(-5, 5), st.sampled_from([0.5, 1.5, -2.5]))
_leaf = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["integer", "number", "string", "array", "object", "boolean",
                             "null", ["integer", "null"], ["string", "number"]]),
    "minimum": _num, "maximum": _num, "exclusiveMinimum": _num, "exclusiveMaximum": _num,
    "multipleOf": st.sampled_from([2, 0.5]), "minLength": st.integers(0, 4),
    "maxLength": st.integers(0, 4),
    "pattern": st.sampled_from(["^a+$", "^[a-z]*$", "a]", "^x", "^(?!a)b$"]),
    "format": st.sampled_from(["date", "regex", "email", "int32"]),
    "enum": st.sampled_from([[1, 2], ["a"], [None]]), "const": st.sampled_from([1, "a"]),
    "minItems": st.integers(0, 3), "maxItems": st.integers(0, 3), "uniqueItems": st.booleans(),
    "minProperties": st.integers(0, 3), "maxProperties": st.integers(0, 3),
    "required": st.sampled_from([["a"], ["a", "b"], ["z"]]),
})  # fmt: skip


def _nested(inner: Any) -> Any:
    sub = inner | st.booleans()
    return _leaf.flatmap(lambda d: st.fixed_dictionaries({k: st.just(v) for k, v in d.items()},
        optional={
            "properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), sub, max_size=3),
            "patternProperties": st.dictionaries(st.sampled_from(["^x", "^y"]), inner, max_size=2),
            "additionalProperties": sub, "items": sub, "prefixItems": st.lists(sub, max_size=3),
            "anyOf": st.lists(sub, min_size=1, max_size=3),
            "oneOf": st.lists(inner, min_size=1, max_size=3),
            "allOf": st.lists(sub, min_size=1, max_size=3), "contains": inner,
            "propertyNames": sub, "not": inner, "$ref": st.sampled_from(["#/$defs/d", "#"]),
        }))  # fmt: skip


random_schemas = st.recursive(_leaf, _nested, max_leaves=8).map(
    lambda s: {**s, "$defs": {"d": {"type": "integer", "minimum": 1}}}
)


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(schema=random_schemas)
def test_every_schema_the_preflight_serves_compiles(compiler: Any, schema: Any) -> None:
    try:
        checked = SchemaChecker().check(schema)
    except (SchemaInvalid, SchemaUnsupported):
        return
    compile_like_vllm(compiler, checked.tier_schema)
