"""Lowering keeps its promise (every instance the original accepts, the lowered schema accepts),
and no schema of any shape makes the preflight fail other than with a 400 or a 422."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import OutputInvalid, SchemaInvalid, SchemaUnsupported
from gateway.structured import rules as rules
from gateway.structured.preflight import _KEYWORD_KIND, SchemaChecker
from tests.unit.test_schema_check import LOWERED

CORPUS = Path(__file__).parents[1] / "data" / "schemas"


def corpus() -> list[tuple[str, Any]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted(CORPUS.glob("*.json"))
            if p.name != "manifest.json"]  # fmt: skip


def lowered_cases() -> list[tuple[str, Any]]:
    cases = [(f"rule {r.id}", r.example) for r in rules.REJECT if r.lower is not None]
    cases += [(f"case {name}", schema) for name, schema, _ in LOWERED]
    cases += corpus()
    out = []
    for name, schema in cases:
        try:
            checked = SchemaChecker().check(schema)
        except (SchemaInvalid, SchemaUnsupported):
            continue
        if checked.lowered_at:
            out.append((name, schema))
    return out


LOWERED_CASES = lowered_cases()


def test_the_property_cases_cover_every_lowering() -> None:
    lowered_rules = {f.rule for _, s in LOWERED_CASES for f in SchemaChecker().check(s).lowered_at}
    assert lowered_rules == {r.id for r in rules.REJECT if r.lower is not None}


@pytest.mark.parametrize(("name", "schema"), LOWERED_CASES, ids=[c[0] for c in LOWERED_CASES])
def test_the_lowered_schema_accepts_every_instance_of_the_original(name: str, schema: Any) -> None:
    checked = SchemaChecker().check(schema)
    original = checked.validator()
    lowered = jsonschema_rs.validator_for(checked.tier_schema, validate_formats=True)
    # the violating instances of the rules, where the original accepts them, too
    for rule in rules.REJECT:
        if rule.violating is not None and original.is_valid(rule.violating):
            assert lowered.is_valid(rule.violating)
    # aimed at the original's keywords and at the lowered schema's (a merged allOf): only
    # the values the original accepts are tried
    strategy = st.one_of(
        instances(schema, schema), instances(checked.tier_schema, checked.tier_schema)
    )
    valid = []

    # derandomized: the same examples every run, so a pass is not luck
    @settings(max_examples=50, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def accepted(instance: Any) -> None:
        if original.is_valid(instance):
            valid.append(instance)
            assert lowered.is_valid(instance), instance

    accepted()
    assert valid, "no instance of the original was generated: aim the generator better"


# hypothesis-jsonschema would be the library for this, but 0.23.1 reaches into Hypothesis
# internals that 6.170 renamed (`many.more`) and fails on every object schema; this
# generator aims near each keyword and the original's validator keeps only true instances.
FORMAT_EXAMPLES = {
    "date": "2026-02-28", "date-time": "2026-02-28T10:00:00Z", "time": "10:00:00Z",
    "email": "a@example.com", "uri": "https://example.com/a", "uuid":
    "123e4567-e89b-12d3-a456-426614174000", "ipv4": "10.0.0.1", "hostname": "example.com",
}  # fmt: skip


def _resolve(root: Any, ref: str) -> Any:
    target = root
    for part in ref[2:].split("/") if ref.startswith("#/") else ():
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, list) and part.isdigit():
            target = target[int(part)]
        elif isinstance(target, dict):
            target = target.get(part, {})
    return target


def _bound(schema: dict[str, Any], key: str, default: int) -> int:
    value = schema.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 2**40:
        return int(value)
    return default


def instances(schema: Any, root: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values aimed at ``schema``'s keywords (not all of them instances: filter them)."""
    if not isinstance(schema, dict) or depth > 6:
        return json_values
    options: list[st.SearchStrategy[Any]] = []
    if isinstance(schema.get("$ref"), str):
        options.append(instances(_resolve(root, schema["$ref"]), root, depth + 1))
    if "const" in schema:  # exhaustive: nothing else is an instance
        return st.just(schema["const"])
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(key, []) if isinstance(schema.get(key), list) else []:
            options.append(instances(branch, root, depth + 1))
    kinds = schema.get("type")
    kinds = {kinds} if isinstance(kinds, str) else set(kinds or ())
    if kinds & {"integer", "number"}:
        lo = _bound(schema, "minimum", -20)
        hi = max(lo, _bound(schema, "maximum", 20))
        options.append(st.integers(lo, hi))
        if "number" in kinds:
            options.append(st.floats(lo, hi))
    if "string" in kinds:
        if isinstance(schema.get("pattern"), str):  # ECMA's \\d is ASCII
            options.append(st.from_regex(re.compile(schema["pattern"], re.ASCII)))
        elif schema.get("format") in FORMAT_EXAMPLES:
            options.append(st.just(FORMAT_EXAMPLES[schema["format"]]))
        else:
            options.append(st.text(min_size=_bound(schema, "minLength", 0), max_size=12))
    options += [st.just(v) for v, k in ((True, "boolean"), (None, "null")) if k in kinds]
    props = schema.get("properties")
    if isinstance(props, dict) or "object" in kinds:
        fields = {k: instances(v, root, depth + 1) for k, v in (props or {}).items()}
        required = [k for k in schema.get("required", []) if isinstance(k, str)]
        fields |= {k: json_values for k in required if k not in fields}
        extras = st.dictionaries(st.text(max_size=3), json_values, max_size=2)
        options.append(
            st.builds(
                lambda req, opt, more: {**more, **opt, **req},
                st.fixed_dictionaries({k: fields[k] for k in required}),
                st.fixed_dictionaries({}, optional=fields),
                extras | st.just({}),
            )
        )
    items = [schema.get(k) for k in ("items", "additionalItems")]
    prefix = schema.get("prefixItems") or (items[0] if isinstance(items[0], list) else None)
    if isinstance(prefix, list):
        options.append(st.tuples(*(instances(p, root, depth + 1) for p in prefix)).map(list))
    element = next((i for i in items if isinstance(i, dict)), None)
    if element is not None or "array" in kinds:
        each = instances(element, root, depth + 1) if element is not None else json_values
        if isinstance(schema.get("contains"), dict):
            each = each | instances(schema["contains"], root, depth + 1)
        least = _bound(schema, "minItems", 0)
        options.append(st.lists(each, min_size=least, max_size=least + 3))
    return st.one_of(options) if options else json_values


# --- odd schemas: any JSON value in any keyword position ----------------------------------

KEYWORDS = sorted(
    {k for r in rules.REJECT + rules.UNENFORCED for k in r.keywords}
    | set(_KEYWORD_KIND)
    | {"enum", "const", "default", "examples", "$ref", "$schema", "format", "x-data"}
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6),
    st.sampled_from(["#", "#/$defs/a", "#/properties/a/anyOf/0", "#a", "x.json", "(?i:a)",
                     "a]", "a}", "[]", "integer", "object", "array", "string", "date"]),
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(KEYWORDS), st.text(max_size=3)), inner,
                        max_size=4),
    ),
    max_leaves=16,
)  # fmt: skip
odd_schemas = st.one_of(
    st.booleans(),
    st.dictionaries(st.sampled_from(KEYWORDS), json_values, max_size=5),
)


@settings(max_examples=300, deadline=None, database=None)
@given(schema=odd_schemas)
def test_no_schema_fails_the_preflight_other_than_400_or_422(schema: Any) -> None:
    errors: list[dict[str, Any]] = []
    checked = None
    try:
        checked = SchemaChecker().check(schema)
        checked.require_strict()
    except (SchemaInvalid, SchemaUnsupported) as exc:
        errors = exc.members["errors"]
    assert all(e["keyword"] for e in errors)  # every fault names its keyword
    if checked is None:
        return
    # the lowered schema is something the preflight takes as it is
    assert SchemaChecker().check(checked.tier_schema).lowered_at == ()
    with contextlib.suppress(OutputInvalid, SchemaInvalid):
        checked.validate_output('{"a": [1, "x", null]}', "stop")
