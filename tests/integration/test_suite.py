"""``gateway bench``: warm, verify, run the suite, tabulate; validity from the real outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.ops.bench import load_suite, render_table
from tests.integration.openai_standin import standin_tier

TABLE_HEAD = (
    "| tier | tasks | valid | p50 s | p95 s | fallbacks | tok/s | cold start s | warm check s |"
)
ROW_KEYS = {
    "tier", "tasks", "ok", "valid", "validity_rate", "p50_s", "p95_s", "fallbacks",
    "tokens_per_s", "cold_start_s", "warm_check_s", "warm_verified",
}  # fmt: skip


def small_suite(path: Path, tasks: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"name": "small", "defaults": {"max_tokens": 24}, "tasks": tasks}))
    return path


def bench(tmp_path: Path, *args: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    out = tmp_path / "result.json"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.ops.cli", "bench", "--out", str(out), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert TABLE_HEAD in done.stdout  # printed
    assert TABLE_HEAD in out.with_suffix(".md").read_text()  # and saved beside the JSON
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def check_validity(result: dict[str, Any], suite: Path) -> None:
    """Every ``valid`` flag is what an independent validator says of the recorded text."""
    schemas = {t["id"]: t["schema"] for t in json.loads(suite.read_text())["tasks"]}
    for run, row in zip(result["runs"], result["table"], strict=True):
        assert set(row) == ROW_KEYS
        flags = []
        for r in run["results"]:
            expected = r["text"] is not None and jsonschema.Draft202012Validator(
                schemas[r["task"]]
            ).is_valid(json.loads(r["text"]))
            assert r["valid"] is expected, r
            flags.append(expected)
        assert row["valid"] == sum(flags)
        assert row["validity_rate"] == round(sum(flags) / len(flags), 4)


def test_validity_comes_from_the_outputs_not_the_status(tmp_path: Path) -> None:
    """The stub answers one fixed object: valid for one task's schema, not for the other's;
    the gateway passes both with 200 (json_schema checking aside), the bench tells them apart."""
    suite = small_suite(
        tmp_path / "suite.json",
        [
            {"id": "person", "prompt": "Who?", "schema": {"required": ["name", "age"]}},
            {"id": "answer", "prompt": "2+2?", "schema": {"required": ["answer"]}},
        ],
    )
    with standin_tier() as upstream:
        url = f"http://127.0.0.1:{upstream.server_address[1]}"
        env = {"GATEWAY_TIER_DEV_URL": url, "GATEWAY_TIER_DEV_KIND": "openai"}
        result = bench(tmp_path, "--suite", str(suite), env=env, timeout=120)
    check_validity(result, suite)
    (row,) = result["table"]
    assert row["tier"] == "dev"
    assert row["tasks"] == 2
    # the stub's object passes `person` only; a 502 from a stricter gateway is invalid too
    assert row["valid"] == 1
    assert row["validity_rate"] == 0.5
    assert row["warm_verified"] is True
    assert row["tokens_per_s"] is not None


@pytest.mark.model
def test_bench_against_the_local_tier_with_zero_configuration(tmp_path: Path) -> None:
    suite = small_suite(
        tmp_path / "suite.json",
        [
            t
            for t in json.loads(
                (Path(__file__).parents[2] / "gateway/data/suite.json").read_text()
            )["tasks"]
        ][:3],
    )
    # No --url, no GATEWAY_*: bench starts `gateway serve`, whose dev is the embedded tier.
    result = bench(tmp_path, "--suite", str(suite), "--warm-timeout", "200", env={}, timeout=300)
    check_validity(result, suite)
    (row,) = result["table"]
    (run,) = result["runs"]
    assert row["tier"] == "dev"
    assert row["tasks"] == 3
    assert row["warm_verified"] is True
    assert row["cold_start_s"] is not None  # the model loaded during the run
    assert row["cold_start_s"] > 0
    assert row["p50_s"] <= row["p95_s"]
    served = [r for r in run["results"] if r["status"] == 200]
    assert served
    assert all(r["completion_tokens"] > 0 for r in served)
    assert row["tokens_per_s"] > 0


def test_render_table_marks_missing_figures() -> None:
    row = {
        "tier": "prod", "tasks": 2, "validity_rate": 0.5, "p50_s": None, "p95_s": None,
        "fallbacks": 2, "tokens_per_s": None, "cold_start_s": None, "warm_check_s": 1.234,
    }  # fmt: skip
    lines = render_table([row]).splitlines()
    assert lines[0] == TABLE_HEAD
    assert lines[2] == "| prod | 2 | 50% | - | - | 2 | - | - | 1.23 |"


def test_shipped_suite_loads_and_every_schema_compiles() -> None:
    suite = load_suite()
    assert len(suite.tasks) >= 8
    assert len({t.id for t in suite.tasks}) == len(suite.tasks)
