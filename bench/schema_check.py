"""Preflight and output-validation timings (not a test: numbers go in bench/results/).

    PYTHONPATH=$PWD /work/venv/bin/python bench/schema_check.py [--quick]

1. ``SchemaChecker.check`` p50/p99, cached (a hit: hash + LRU lookup) and uncached (a fresh
   checker each time: meta-schema validation + rule walk), from a 0.5 KB schema to 100 KB.
2. Output validators on the same schemas: jsonschema-rs (the runtime dependency), jsonschema
   (pure Python) and fastjsonschema (code generation), build time and per-output time for a
   valid and an invalid output.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import jsonschema_rs
import msgspec

from gateway.errors import GatewayError
from gateway.structured.preflight import SchemaChecker

CORPUS = Path(__file__).parents[1] / "tests" / "data" / "schemas"
LOREM = "Describes the field for the model and for humans reading the schema. " * 3


def dense(n: int) -> dict[str, Any]:
    """Worst case per byte: many small subschemas, no prose (n=400: ~92 KB, 2,000 schemas)."""
    item = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "n": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}},
        },
        "required": ["name"],
    }
    return {"type": "object", "properties": {f"p{i}": item for i in range(n)}}


def described(n: int) -> dict[str, Any]:
    """Typical of API-extraction schemas: fewer subschemas, each with a description."""
    fields = {
        f"field_{i}": {
            "type": ["string", "integer", "boolean", "number"][i % 4],
            "description": LOREM,
        }
        for i in range(n)
    }
    return {"type": "object", "properties": fields, "required": list(fields)[: n // 2]}


def instance_for(schema: dict[str, Any]) -> Any:
    """A valid output for the synthetic schemas above."""
    samples = {"string": "x", "integer": 1, "boolean": True, "number": 1.5}
    out: dict[str, Any] = {}
    for name, sub in schema["properties"].items():
        if sub["type"] == "object":
            out[name] = {"name": "x", "n": 1, "tags": ["a", "b"]}
        else:
            out[name] = samples[sub["type"]]
    return out


def timed(fn: Callable[[], Any], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds per call; the collector is paused so its pauses, which
    belong to the whole process rather than to this code, do not land in one sample."""
    wall, cpu = [], []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            w, c = time.perf_counter_ns(), time.process_time_ns()
            fn()
            cpu.append((time.process_time_ns() - c) / 1e6)
            wall.append((time.perf_counter_ns() - w) / 1e6)
    finally:
        gc.enable()
    return wall, cpu


def pct(runs: list[float], q: float) -> float:
    ordered = sorted(runs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def preflight(schemas: dict[str, dict[str, Any]], repeat: int) -> None:
    head = ("schema", "KB", "subschemas", "uncached p50", "uncached p99", "uncached CPU p50",
            "cached p50", "cached p99")  # fmt: skip
    print(row(*head))
    print(row(*["---"] * len(head)))
    for name, schema in schemas.items():
        size = len(msgspec.json.encode(schema)) / 1024
        # One warm app (meta-schema validators built) whose cache is emptied before each
        # timed check: the cost of a schema the app has not seen yet.
        warm = _primed()
        wall, cpu = timed(partial(_uncached, warm, schema), repeat)
        verdict = _check(warm, schema)
        hits, _ = timed(partial(_check, warm, schema), repeat * 5)
        label = f"{name} ({verdict})" if verdict else name
        count = json.dumps(schema).count('"type"')
        cells = (pct(wall, 0.5), pct(wall, 0.99), pct(cpu, 0.5), pct(hits, 0.5), pct(hits, 0.99))
        print(row(label, f"{size:.1f}", count, *(f"{v:.3f} ms" for v in cells)))


def _primed() -> SchemaChecker:
    checker = SchemaChecker()
    checker.check({"type": "null"})
    return checker


def _uncached(checker: SchemaChecker, schema: Any) -> None:
    checker.clear()
    _check(checker, schema)


def _check(checker: SchemaChecker, schema: Any) -> str | None:
    """Check; a refusal is cached and re-raised like an acceptance, so time both alike."""
    try:
        checker.check(schema)
    except GatewayError as exc:
        return f"{exc.status}"
    return None


def _build_rs(schema: Any) -> Any:
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def _build_py(schema: Any) -> Any:
    return jsonschema.validators.validator_for(schema)(schema)


def _build_fast(schema: Any) -> Any:
    # fastjsonschema knows drafts 4, 6 and 7 only: the synthetic schemas are valid in all.
    return fastjsonschema.compile({**schema, "$schema": "http://json-schema.org/draft-07/schema#"})


def _errors(validator: Any, instance: Any) -> Any:
    return list(validator.iter_errors(instance))[:5]


def _valid(validator: Any, instance: Any) -> None:
    validator.validate(instance)


def _fast_valid(validator: Any, instance: Any) -> None:
    validator(instance)


CANDIDATES = {
    "jsonschema-rs": (_build_rs, _valid, _errors, "all, with paths"),
    "jsonschema": (_build_py, _valid, _errors, "all, with paths"),
    "fastjsonschema": (_build_fast, _fast_valid, lambda v, i: _first_error(v, i),
                       "first only; drafts 4-7 only"),
}  # fmt: skip


def validators(cases: dict[str, tuple[dict[str, Any], Any, Any]], repeat: int) -> None:
    head = ("schema", "validator", "build p50", "valid output p50", "invalid output p50",
            "errors reported")  # fmt: skip
    print(row(*head))
    print(row(*["---"] * len(head)))
    for name, (schema, good, bad) in cases.items():
        for label, (build, valid, invalid, errors) in CANDIDATES.items():
            validator = build(schema)
            builds, _ = timed(partial(build, schema), max(3, repeat // 20))
            ok, _ = timed(partial(valid, validator, good), repeat)
            ko, _ = timed(partial(invalid, validator, bad), repeat)
            print(row(name, label, f"{pct(builds, 0.5):.2f} ms", f"{pct(ok, 0.5) * 1000:.0f} µs",
                      f"{pct(ko, 0.5) * 1000:.0f} µs", errors))  # fmt: skip


def _first_error(validate: Callable[[Any], Any], instance: Any) -> Any:
    try:
        validate(instance)
    except fastjsonschema.JsonSchemaValueException as exc:
        return exc.path
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    repeat = 20 if args.quick else 200
    corpus = {p.stem: json.loads(p.read_text()) for p in sorted(CORPUS.glob("*.json"))}
    corpus.pop("manifest")
    # As a request body decodes them: every subschema its own object.
    fresh: Callable[[Any], Any] = lambda schema: msgspec.json.decode(msgspec.json.encode(schema))  # noqa: E731
    big_dense, big_described = fresh(dense(400)), fresh(described(330))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {stamp}, Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}")
    print("\n## Preflight\n")
    preflight(
        {
            "person (corpus)": corpus["person"],
            "invoice (corpus)": corpus["invoice"],
            "package-json-subset (corpus)": corpus["package-json-subset"],
            "dense 10 KB": fresh(dense(40)),
            "described 10 KB": fresh(described(33)),
            "dense 100 KB": big_dense,
            "described 100 KB": big_described,
        },
        repeat,
    )
    invoice_good = {
        "number": "INV-0001",
        "issued": "2026-11-27",
        "currency": "EUR",
        "lines": [{"description": "x", "quantity": 1, "unit_price": 2.5}],
    }
    invoice_bad = {**invoice_good, "lines": [{"description": 1, "quantity": 0}]}
    dense_good = instance_for(big_dense)
    dense_bad = {**dense_good, "p3": {"n": -1}, "p7": {"name": 5}}
    described_good = instance_for(big_described)
    described_bad = {**described_good, "field_0": 7, "field_1": "x"}
    print("\n## Output validation\n")
    validators(
        {
            "invoice": (corpus["invoice"], invoice_good, invoice_bad),
            "dense 100 KB": (big_dense, dense_good, dense_bad),
            "described 100 KB": (big_described, described_good, described_bad),
        },
        repeat,
    )


if __name__ == "__main__":
    main()
