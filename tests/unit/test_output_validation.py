"""Output validation: every outcome (valid, truncated, not JSON, against the schema) and what
the 502 problem body tells the client."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import OutputInvalid, SchemaInvalid
from gateway.structured.preflight import CheckedSchema, SchemaChecker, json_path

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "pets": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"kind": {"enum": ["cat", "dog"]}},
                "required": ["kind"],
            },
        },
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture
def person() -> CheckedSchema:
    return SchemaChecker().check(PERSON)


def outcome(checked: CheckedSchema, text: str, finish: str | None = "stop") -> OutputInvalid:
    with pytest.raises(OutputInvalid) as caught:
        checked.validate_output(text, finish)
    assert caught.value.status == 502
    return caught.value


@pytest.mark.parametrize("finish", ["stop", None])
def test_valid_output_is_returned_parsed(person: CheckedSchema, finish: str | None) -> None:
    text = '{"name": "Ada", "age": 36, "pets": [{"kind": "cat"}]}'
    assert person.validate_output(text, finish) == {
        "name": "Ada",
        "age": 36,
        "pets": [{"kind": "cat"}],
    }


def test_length_finish_is_truncated_even_when_the_text_parses(person: CheckedSchema) -> None:
    error = outcome(person, '{"name": "Ada", "age": 36}', "length")
    assert error.members["reason"] == "truncated"
    assert "max_tokens" in error.detail


def test_cut_output_is_truncated(person: CheckedSchema) -> None:
    assert outcome(person, '{"name": "Ad', "length").members["reason"] == "truncated"


@pytest.mark.parametrize(
    "text",
    ['{"name": "Ada", "age": ', "", "NaN", '{"name": "Ada"} trailing', "1e400", "```json\n{}```"],
)
def test_not_json_is_invalid_json(person: CheckedSchema, text: str) -> None:
    error = outcome(person, text)
    assert error.members["reason"] == "invalid-json"
    assert error.members["errors"][0]["path"] == "$"


@pytest.mark.parametrize(
    ("text", "path", "keyword"),
    [
        ('{"name": "Ada"}', "$", "required"),
        ('{"name": "", "age": 3}', "$.name", "minLength"),
        ('{"name": "Ada", "age": -1}', "$.age", "minimum"),
        ('{"name": "Ada", "age": 1.5}', "$.age", "type"),
        ('{"name": "Ada", "age": 3, "pets": [{"kind": "cow"}]}', "$.pets[0].kind", "enum"),
        ('{"name": "Ada", "age": 3, "pets": [{}, {}]}', "$.pets[1]", "required"),
        ('{"name": "Ada", "age": 3, "x": 1}', "$", "additionalProperties"),
    ],
)
def test_schema_violation_names_path_and_keyword(
    person: CheckedSchema, text: str, path: str, keyword: str
) -> None:
    error = outcome(person, text)
    assert error.members["reason"] == "schema-violation"
    assert {"path": path, "keyword": keyword} in [
        {"path": e["path"], "keyword": e["keyword"]} for e in error.members["errors"]
    ]


def test_only_the_first_few_errors_are_listed() -> None:
    checked = SchemaChecker().check({"type": "array", "items": {"type": "string"}})
    error = outcome(checked, "[" + ",".join(["1"] * 50) + "]")
    assert len(error.members["errors"]) == 5
    assert error.members["errors"][0]["path"] == "$[0]"


def test_messages_are_kept_short() -> None:
    checked = SchemaChecker().check({"type": "integer"})
    error = outcome(checked, '"' + "x" * 5000 + '"')
    assert len(error.members["errors"][0]["message"]) <= 300


def test_large_integers_keep_their_value() -> None:
    checked = SchemaChecker().check({"type": "integer"})
    assert checked.validate_output(str(2**70), "stop") == 2**70
    bounded = SchemaChecker().check({"type": "integer", "maximum": 2**62})
    assert outcome(bounded, str(2**70)).members["errors"][0]["keyword"] == "maximum"


def test_unenforced_keywords_are_checked_after_generation() -> None:
    checked = SchemaChecker().check({"type": "integer", "not": {"const": 3}})
    assert checked.unenforced == ("not",)
    assert checked.validate_output("4", "stop") == 4
    assert outcome(checked, "3").members["errors"][0]["keyword"] == "not"


def test_formats_are_asserted() -> None:
    checked = SchemaChecker().check({"type": "string", "format": "date"})
    assert checked.validate_output('"2026-11-27"', "stop") == "2026-11-27"
    # XGrammar's date grammar admits 30 February (tests/integration shows the shape rules);
    # the calendar is checked here.
    assert outcome(checked, '"2026-02-30"').members["errors"][0]["keyword"] == "format"


def test_draft_04_semantics_are_used_for_a_draft_04_schema() -> None:
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "integer"}
    checked = SchemaChecker().check(schema)
    assert checked.draft == 4
    # Draft 4 says 1.0 is not an integer; 2020-12 says it is.
    draft4_says = [e["keyword"] for e in _errors(checked, "1.0")]
    modern = SchemaChecker().check({"type": "integer"})
    assert draft4_says == ["type"]
    assert _errors(modern, "1.0") == []


def _errors(checked: CheckedSchema, text: str) -> list[dict[str, Any]]:
    try:
        checked.validate_output(text, "stop")
    except OutputInvalid as exc:
        return list(exc.members["errors"])
    return []


def test_problem_body(person: CheckedSchema) -> None:
    body = outcome(person, '{"name": "Ada"}').problem()
    assert body["status"] == 502
    assert body["type"].endswith("/output-invalid")
    assert body["reason"] == "schema-violation"
    assert set(body["errors"][0]) == {"path", "keyword", "message"}


@pytest.mark.parametrize(
    ("parts", "path"),
    [([], "$"), (["a", 0, "b"], "$.a[0].b"), (["a b", "c.d"], '$["a b"]["c.d"]'), (["$x"], "$.$x")],
)
def test_json_path(parts: list[str | int], path: str) -> None:
    assert json_path(parts) == path


def test_no_text_at_all_is_invalid_json(person: CheckedSchema) -> None:
    assert outcome(person, None).members["reason"] == "invalid-json"  # type: ignore[arg-type]


def test_a_schema_that_cannot_be_compiled_is_the_schemas_fault_not_a_500() -> None:
    broken = CheckedSchema({"$ref": "#/$defs/missing"}, "0" * 64, 2020, ())  # not via check()
    with pytest.raises(SchemaInvalid):
        broken.validate_output("1", "stop")
