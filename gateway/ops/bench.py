"""``gateway bench``: the field report's pre-benchmark plan as one command.

For each tier: warm it (``POST /warmup``, then ``GET /status`` against its ETA), verify it is
warm (a small request must answer under the warm threshold: the report's "subsequent calls
<10 s"), run a suite of structured-generation tasks through ``POST /generate``, and print and
save one row per tier: latency p50/p95, output validity (each output checked against its
task's schema here, with ``jsonschema_rs``), fallbacks (``X-Fallback-Reason``), tokens/s
(from ``usage``), and the cold start observed.

>>> gateway bench                                  # starts `gateway serve` on a free port
>>> gateway bench --url http://127.0.0.1:8000 --tier dev --suite my_suite.json

Without ``--url`` (or ``$GATEWAY_URL``) it starts its own gateway with ``gateway serve``, so
with no configuration at all it measures the embedded CPU tier serving ``dev``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import msgspec

WARM_THRESHOLD_S = 10.0  # field report: "verify model is warm (subsequent calls <10s)"
WARM_TIMEOUT_S = 900.0  # a 32B cold start measured 424 s; 2x headroom, like startup_timeout
POLL_S = 2.0  # how often the warm-up progress asks /status
VERIFY_TRIES = 3  # the first answer after a boot may still be slow (lazy init)
GATEWAY_BOOT_S = 60.0  # `gateway serve` answers /health at once; the model loads behind it
BAR = 30
VERIFY_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


class Task(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    id: str
    prompt: str
    schema: dict[str, Any]
    max_tokens: int | None = None
    temperature: float | None = None


class Defaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_tokens: int = 64
    temperature: float = 0.0  # comparable runs: the same input gives the same output


class Suite(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: str
    description: str = ""
    defaults: Defaults = Defaults()
    tasks: list[Task]


def load_suite(path: Path | None = None) -> Suite:
    """A suite file, or the default one shipped in ``gateway/data/suite.json``; every task's
    schema is compiled here, so a broken one fails before any tier is warmed."""
    import jsonschema_rs

    shipped = resources.files("gateway").joinpath("data", "suite.json")
    raw = path.read_bytes() if path else shipped.read_bytes()
    where = str(path or "gateway/data/suite.json")
    try:
        suite = msgspec.json.decode(raw, type=Suite)
    except msgspec.MsgspecError as exc:
        raise ValueError(f"{where}: {exc}") from None
    for task in suite.tasks:
        try:
            jsonschema_rs.validator_for(task.schema)
        except ValueError as exc:
            raise ValueError(f"{where}: task {task.id}: invalid schema: {exc}") from None
    return suite


@dataclass
class TaskResult:
    task: str
    status: int
    latency_s: float  # wall time seen by the client
    served: str | None
    fallback_reason: str | None
    text: str | None  # the model's raw output (None when the gateway refused or failed)
    valid: bool  # ``text`` parsed and validated against the task's schema, here
    completion_tokens: int = 0
    tier_latency_s: float = 0.0  # the tier's own time, from the answer's latency_ms
    error: str | None = None


@dataclass
class TierRun:
    tier: str
    cold_start_s: float | None  # None: it was warm already
    warm_check_s: float | None
    warm_verified: bool
    results: list[TaskResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.results if r.status == 200]
        latencies = sorted(r.latency_s for r in ok)
        tier_time = sum(r.tier_latency_s for r in ok)
        tokens = sum(r.completion_tokens for r in ok)
        n = len(self.results)
        return {
            "tier": self.tier,
            "tasks": n,
            "ok": len(ok),
            "valid": sum(r.valid for r in self.results),
            "validity_rate": round(sum(r.valid for r in self.results) / n, 4) if n else None,
            "p50_s": _percentile(latencies, 50),
            "p95_s": _percentile(latencies, 95),
            "fallbacks": sum(r.fallback_reason is not None for r in self.results),
            "tokens_per_s": round(tokens / tier_time, 2) if tier_time > 0 else None,
            "cold_start_s": self.cold_start_s,
            "warm_check_s": self.warm_check_s,
            "warm_verified": self.warm_verified,
        }


def _percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); values sorted."""
    if not values:
        return None
    pos = (len(values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(values) - 1)
    return round(values[low] + (values[high] - values[low]) * (pos - low), 4)


def is_valid_output(text: str | None, schema: dict[str, Any]) -> bool:
    import jsonschema_rs

    if text is None:
        return False
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False
    return bool(jsonschema_rs.validator_for(schema).is_valid(value))


def run_task(client: httpx.Client, tier: str, task: Task, suite: Suite) -> TaskResult:
    body = {
        "prompt": task.prompt,
        "schema": task.schema,
        "max_tokens": task.max_tokens or suite.defaults.max_tokens,
        "temperature": suite.defaults.temperature if task.temperature is None else task.temperature,
    }
    started = time.perf_counter()
    try:
        response = client.post("/generate", json=body, headers={"X-Model-Tier": tier})
    except httpx.HTTPError as exc:
        latency = time.perf_counter() - started
        return TaskResult(task.id, 0, latency, None, None, None, False, error=repr(exc))
    latency = time.perf_counter() - started
    try:
        data = response.json() if response.content else {}
    except ValueError:  # a proxy's HTML error page, say
        data = {}
    served = response.headers.get("x-model-tier-served")
    reason = response.headers.get("x-fallback-reason")
    if response.status_code != 200:
        detail = data.get("detail") if isinstance(data, dict) else None
        return TaskResult(
            task.id, response.status_code, latency, served, reason, None, False, error=detail
        )
    usage = data.get("usage") or {}
    return TaskResult(
        task=task.id,
        status=200,
        latency_s=round(latency, 4),
        served=served,
        fallback_reason=reason,
        text=data.get("text"),
        valid=is_valid_output(data.get("text"), task.schema),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        tier_latency_s=float(data.get("latency_ms") or 0.0) / 1000,
    )


def _progress(tier: str, elapsed: float, eta: float | None, state: str) -> None:
    if eta:
        total = elapsed + eta
        done = min(int(BAR * elapsed / total), BAR)
        line = (
            f"\r{tier}: {state:8} [{'#' * done}{'.' * (BAR - done)}] {elapsed:4.0f}s/~{total:.0f}s"
        )
    else:
        line = f"\r{tier}: {state:8} {elapsed:4.0f}s"
    sys.stderr.write(line)
    sys.stderr.flush()


def _answered(response: httpx.Response) -> bool:
    """The tier produced an answer: 200, or output the gateway refused (still the tier's)."""
    if response.status_code == 200:
        return True
    try:
        problem = response.json()
    except ValueError:
        return False
    return isinstance(problem, dict) and str(problem.get("type", "")).endswith("/output-invalid")


def _configured(state: dict[str, Any]) -> bool:
    if "configured" in state:
        return bool(state["configured"])
    return state.get("state") != "unconfigured"


def _is_warm(state: dict[str, Any]) -> bool:
    return bool(state.get("warm")) or state.get("state") == "warm"


def warm_and_verify(
    client: httpx.Client, tier: str, *, threshold_s: float, timeout_s: float
) -> TierRun:
    """Warm ``tier`` with progress against its ETA, then verify it answers under the
    threshold; the cold start observed is the time until the first good answer."""
    started = time.monotonic()
    response = client.post("/warmup", json={"tier": tier})
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    was_warm = _is_warm(state)
    while not _is_warm(state) and time.monotonic() - started < timeout_s:
        _progress(tier, time.monotonic() - started, state.get("eta_s"), str(state.get("state")))
        time.sleep(POLL_S)
        state = client.get("/status").json()[tier]
    body = {"prompt": "Say ok.", "schema": VERIFY_SCHEMA, "max_tokens": 8, "temperature": 0.0}
    headers = {"X-Model-Tier": tier, "X-Tier-Fallback": "deny"}  # verify this tier, no other
    first_ok: float | None = None
    check_s: float | None = None
    tries = 0
    waited = False  # the tier was still booting when the gateway called it warm
    while time.monotonic() - started < timeout_s and tries < VERIFY_TRIES:
        sent = time.perf_counter()
        answer = client.post("/generate", json=body, headers=headers)
        check_s = round(time.perf_counter() - sent, 4)
        if answer.status_code in (503, 504):  # still booting: wait, within the timeout
            waited = True
            _progress(tier, time.monotonic() - started, None, "booting")
            time.sleep(POLL_S)
            continue
        tries += 1
        if not _answered(answer):
            continue
        if first_ok is None:
            first_ok = time.monotonic() - started
        if check_s < threshold_s:
            break
    sys.stderr.write("\n" if waited or not was_warm else "")
    verified = check_s is not None and first_ok is not None and check_s < threshold_s
    cold = None if was_warm and not waited and tries == 1 and verified else first_ok
    return TierRun(
        tier=tier,
        cold_start_s=None if cold is None else round(cold, 2),
        warm_check_s=check_s,
        warm_verified=verified,
    )


COLUMNS = (
    ("tier", "tier", "{}"),
    ("tasks", "tasks", "{}"),
    ("valid", "validity_rate", "{:.0%}"),
    ("p50 s", "p50_s", "{:.2f}"),
    ("p95 s", "p95_s", "{:.2f}"),
    ("fallbacks", "fallbacks", "{}"),
    ("tok/s", "tokens_per_s", "{:.1f}"),
    ("cold start s", "cold_start_s", "{:.1f}"),
    ("warm check s", "warm_check_s", "{:.2f}"),
)


def render_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table, one row per tier (``-`` for a figure that does not apply)."""
    head = "| " + " | ".join(title for title, _, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, rule]
    for row in rows:
        cells = [fmt.format(row[key]) if row[key] is not None else "-" for _, key, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class BenchReport:
    url: str
    suite: str
    started_at: str
    tiers: list[TierRun]

    def rows(self) -> list[dict[str, Any]]:
        return [run.summary() for run in self.tiers]

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "suite": self.suite,
            "started_at": self.started_at,
            "table": self.rows(),
            "runs": [asdict(run) for run in self.tiers],
        }


def run_bench(
    url: str,
    suite: Suite,
    *,
    tiers: list[str] | None = None,
    threshold_s: float = WARM_THRESHOLD_S,
    warm_timeout_s: float = WARM_TIMEOUT_S,
) -> BenchReport:
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Each call may hold a cold tier's whole budget; the gateway enforces the real deadline.
    timeout = httpx.Timeout(warm_timeout_s, connect=10.0)
    runs = []
    with httpx.Client(base_url=url, timeout=timeout) as client:
        status = client.get("/status")
        status.raise_for_status()
        known: dict[str, Any] = status.json()
        chosen = tiers or [name for name, tier in known.items() if _configured(tier)]
        for tier in chosen:
            if tier not in known:
                raise ValueError(f"the gateway has no tier {tier!r}; it has {', '.join(known)}")
            run = warm_and_verify(client, tier, threshold_s=threshold_s, timeout_s=warm_timeout_s)
            for task in suite.tasks:
                run.results.append(run_task(client, tier, task, suite))
            runs.append(run)
    return BenchReport(url=url, suite=suite.name, started_at=started_at, tiers=runs)


def start_gateway(
    config: str | None, log: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`gateway serve` on a free loopback port (it starts the embedded tier if needed); its
    output goes to ``log`` when given, so its request log does not bury the progress."""
    from gateway.ops.serving import free_port

    port = free_port()
    argv = [sys.executable, "-m", "gateway.ops.cli", "serve", "--port", str(port)]
    if config:
        argv += ["--config", config]
    sink = log.open("ab") if log else None
    try:
        child = subprocess.Popen(  # noqa: S603  # our own CLI
            argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
        )
    finally:
        if sink is not None:
            sink.close()  # the child holds its own descriptor
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + GATEWAY_BOOT_S
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return child, url
        except httpx.HTTPError:
            time.sleep(0.3)
    stop_gateway(child)
    raise RuntimeError(f"`gateway serve` did not answer on {url} within {GATEWAY_BOOT_S:g} s")


def stop_gateway(child: subprocess.Popen[bytes]) -> None:
    from gateway.ops.serving import GRACEFUL_SHUTDOWN_S, stop

    child.terminate()
    try:
        child.wait(GRACEFUL_SHUTDOWN_S + 15)  # it drains, then stops its CPU tier
    except subprocess.TimeoutExpired:
        stop(child)


def save(report: BenchReport, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    table = out.with_suffix(".md")
    table.write_text(
        f"# gateway bench: {report.suite} against {report.url} at {report.started_at}\n\n"
        + render_table(report.rows())
        + "\n",
        encoding="utf-8",
    )
    return table


def add_bench_parser(sub: Any) -> None:
    """Add ``bench`` to the ``gateway`` command's subparsers."""
    p = sub.add_parser("bench", help="warm, verify, run the structured-output suite, tabulate")
    p.add_argument(
        "--url",
        default=os.environ.get("GATEWAY_URL"),
        help="a running gateway (default: $GATEWAY_URL; none: start `gateway serve` for the run)",
    )
    p.add_argument("--config", help="with no --url: the config the started gateway uses")
    p.add_argument("--tier", action="append", help="repeatable (default: configured tiers)")
    p.add_argument("--suite", type=Path, help="suite JSON (default: the shipped suite)")
    p.add_argument("--limit", type=int, help="run only the first N tasks")
    p.add_argument("--warm-threshold", type=float, default=WARM_THRESHOLD_S, help="seconds")
    p.add_argument("--warm-timeout", type=float, default=WARM_TIMEOUT_S, help="seconds")
    p.add_argument(
        "--out",
        type=Path,
        help="results JSON (+ .md table beside it); default gateway-bench-<UTC time>.json",
    )
    p.set_defaults(func=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    try:
        suite = load_suite(args.suite)
    except (OSError, ValueError) as exc:
        _err(f"gateway bench: {exc}")
        return 2
    if args.limit:
        suite = msgspec.structs.replace(suite, tasks=suite.tasks[: args.limit])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.out or Path(f"gateway-bench-{stamp}.json")
    child = None
    url = args.url
    try:
        if url is None:
            out.parent.mkdir(parents=True, exist_ok=True)
            log = out.with_suffix(".serve.log")
            _err(f"gateway bench: starting `gateway serve` (its output: {log})")
            child, url = start_gateway(args.config, log)
        report = run_bench(
            url,
            suite,
            tiers=args.tier,
            threshold_s=args.warm_threshold,
            warm_timeout_s=args.warm_timeout,
        )
    except (httpx.HTTPError, RuntimeError, ValueError) as exc:
        _err(f"gateway bench: {exc}")
        return 2
    finally:
        if child is not None:
            stop_gateway(child)
    table = save(report, out)
    _out(render_table(report.rows()))
    _out(f"saved {out} and {table}")
    return 0 if all(run.warm_verified for run in report.tiers) else 1


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
