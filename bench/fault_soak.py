"""Fault soak: `gateway serve` under steady load while its tier fails in mixed ways.

c clients post ``/generate`` in a closed loop for ``--duration`` seconds against
``gateway serve`` whose ``dev`` tier is ``standin_tier.py`` (about ``--fault-rate`` of its
answers fail: 5xx, resets, stalls, garbage). Halfway through, the tier is killed with
SIGKILL and started again ``--down`` seconds later on the same port. Reported:

- unanswered requests (no HTTP status: a reset, a timeout) and 500s: both must be 0;
- every status, per 10-second window;
- recovery: from the tier's restart to the first 200, and to the first window whose success
  share is back to the level before the kill;
- RSS of the gateway's process tree (supervisor, workers), early (after the warm-up) and at
  the end: flat within 10 %.

    .venv/bin/python bench/fault_soak.py --duration 600 --concurrency 16   # the committed run

Writes ``bench/results/fault-soak.{json,md}`` (``--out`` to change). Every child runs in its
own process group and is stopped by group id at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}
CLIENT_TIMEOUT_S = 60.0  # far past the tier's budget below: a timeout here is unanswered
WINDOW_S = 10.0
WARMUP_S = 30.0  # the first RSS sample counts after this much load (imports, pools, caches)
# The soak's gateway config: dev is a plain OpenAI tier with a short budget, so a stalled
# answer becomes a 504 in seconds instead of holding a client for the production 120 s.
CONFIG = """\
default_tier = "dev"
tiers_file = "{tiers}"
max_body_bytes = 1_048_576

[tiers.dev]
kind = "openai"
fallback = []
fallback_mode = "deny"
keep_warm = "off"

[tiers.dev.timeouts]
connect = 2.0
warm = 5.0
cold = 10.0
"""


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # fixed argv: this interpreter and our scripts
        argv,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def tree_rss_kb(pgid: int) -> int:
    """VmRSS summed over every process in the group (the supervisor and its workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # field 5 of stat: the process group
                continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
    return total


async def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(url, timeout=1.0)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within {timeout_s} s")


class Soak:
    def __init__(self, args: argparse.Namespace, url: str) -> None:
        self.args = args
        self.url = url
        self.t0 = 0.0
        self.results: list[tuple[float, int | str]] = []  # (seconds since start, status|error)
        self.stop = asyncio.Event()

    async def client(self, http: httpx.AsyncClient) -> None:
        body = {"prompt": "Ada, 36", "schema": PERSON_SCHEMA}
        while not self.stop.is_set():
            sent = time.monotonic() - self.t0
            try:
                response = await http.post(self.url + "/generate", json=body)
                outcome: int | str = response.status_code
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            self.results.append((sent, outcome))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tier_port, gateway_port = free_port(), free_port()
    tier_argv = [
        sys.executable,
        str(ROOT / "bench" / "gateway_bench" / "standin_tier.py"),
        "--port",
        str(tier_port),
        "--fault-rate",
        str(args.fault_rate),
        "--stall",
        str(args.stall),
        "--content",  # an answer that satisfies PERSON_SCHEMA
        json.dumps({"name": "Ada", "age": 36}),
    ]
    workdir = Path(tempfile.mkdtemp(prefix="fault-soak-"))
    config = workdir / "gateway.toml"
    config.write_text(CONFIG.format(tiers=ROOT / "config" / "tiers.toml"))
    tier = start(tier_argv)
    gateway = start(
        [
            sys.executable,
            "-m",
            "gateway.ops.cli",
            "serve",
            "--port",
            str(gateway_port),
            "--workers",
            str(args.workers),
        ],
        env={
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_LOCAL_TIER": "off",
            "GATEWAY_TIER_DEV_URL": f"http://127.0.0.1:{tier_port}",
        },
    )
    url = f"http://127.0.0.1:{gateway_port}"
    events: dict[str, float] = {}
    rss: list[tuple[float, int]] = []
    try:
        await wait_ready(f"http://127.0.0.1:{tier_port}/health")
        await wait_ready(url + "/health")
        soak = Soak(args, url)
        limits = httpx.Limits(max_connections=args.concurrency)
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as http:
            soak.t0 = time.monotonic()
            clients = [asyncio.create_task(soak.client(http)) for _ in range(args.concurrency)]
            kill_at = args.duration / 2
            while (now := time.monotonic() - soak.t0) < args.duration:
                if "killed" not in events and now >= kill_at:
                    os.killpg(tier.pid, signal.SIGKILL)
                    tier.wait()
                    events["killed"] = now
                back_at = events.get("killed", float("inf")) + args.down
                if "restarted" not in events and now >= back_at:
                    tier = start(tier_argv)
                    events["restarted"] = now
                if not rss or now - rss[-1][0] >= 5.0:
                    rss.append((now, tree_rss_kb(gateway.pid)))
                await asyncio.sleep(0.2)
            soak.stop.set()
            await asyncio.gather(*clients)
            rss.append((time.monotonic() - soak.t0, tree_rss_kb(gateway.pid)))
    finally:
        stop_group(gateway)
        stop_group(tier)
    return summarize(args, soak.results, events, rss)


def summarize(
    args: argparse.Namespace,
    results: list[tuple[float, int | str]],
    events: dict[str, float],
    rss: list[tuple[float, int]],
) -> dict[str, Any]:
    counts = collections.Counter(str(outcome) for _, outcome in results)
    windows: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for sent, outcome in results:
        windows[int(sent // WINDOW_S)][str(outcome)] += 1
    timeline = [
        {"from_s": index * WINDOW_S, **dict(sorted(counts_.items()))}
        for index, counts_ in sorted(windows.items())
    ]
    killed, restarted = events.get("killed"), events.get("restarted")

    def ok_share(window: collections.Counter[str]) -> float:
        total = sum(window.values())
        return window["200"] / total if total else 0.0

    recovery: dict[str, float | None] = {"first_200_after_restart_s": None, "share_back_s": None}
    if killed is not None and restarted is not None:
        after = sorted((sent, o) for sent, o in results if sent >= restarted and o == 200)
        if after:
            recovery["first_200_after_restart_s"] = round(after[0][0] - restarted, 2)
        before = [ok_share(w) for i, w in windows.items() if (i + 1) * WINDOW_S <= killed]
        baseline = sorted(before)[len(before) // 2] if before else 0.0
        for index in sorted(windows):
            start_s = index * WINDOW_S
            if start_s >= restarted and ok_share(windows[index]) >= 0.9 * baseline:
                recovery["share_back_s"] = round(start_s + WINDOW_S - restarted, 2)
                break
        recovery["ok_share_before_kill"] = round(baseline, 3)
    early = next((kb for at, kb in rss if at >= WARMUP_S), rss[0][1] if rss else 0)
    end = rss[-1][1] if rss else 0
    unanswered = sum(n for outcome, n in counts.items() if not outcome.isdigit())
    return {
        "command": "python bench/fault_soak.py " + " ".join(sys.argv[1:]),
        "when_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": args.note,
        },
        "settings": {
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "fault_rate": args.fault_rate,
            "stall_s": args.stall,
            "tier_down_s": args.down,
        },
        "requests": len(results),
        "statuses": dict(sorted(counts.items())),
        "unanswered": unanswered,
        "status_500": counts.get("500", 0),
        "events_s": {k: round(v, 2) for k, v in events.items()},
        "recovery": recovery,
        "rss_kb": {
            "early": early,
            "end": end,
            "change_pct": round(100 * (end - early) / early, 1) if early else None,
            "series": [(round(at, 1), kb) for at, kb in rss],
        },
        "timeline": timeline,
    }


def report_md(data: dict[str, Any]) -> str:
    s, rec, rss = data["settings"], data["recovery"], data["rss_kb"]
    rows = "\n".join(f"| {status} | {n:,} |" for status, n in data["statuses"].items())
    keys = sorted({k for w in data["timeline"] for k in w if k != "from_s"})
    head = "| from s | " + " | ".join(keys) + " |\n|--:|" + "--:|" * len(keys)
    lines = [
        f"| {w['from_s']:.0f} | " + " | ".join(str(w.get(k, 0)) for k in keys) + " |"
        for w in data["timeline"]
    ]
    verdict = (
        "PASS"
        if data["unanswered"] == 0
        and data["status_500"] == 0
        and rss["change_pct"] is not None
        and abs(rss["change_pct"]) <= 10
        and rec.get("first_200_after_restart_s") is not None
        else "FAIL"
    )
    return f"""# Fault soak ({data["when_utc"]})

`{data["command"]}`, {s["duration_s"]:.0f} s, c={s["concurrency"]}, `--workers {s["workers"]}`;
the stand-in tier (`bench/gateway_bench/standin_tier.py`) fails ~{s["fault_rate"]:.0%} of its
answers (5xx, resets, {s["stall_s"]:.0f} s stalls, garbage); it was killed with SIGKILL at
{data["events_s"].get("killed")} s and restarted {s["tier_down_s"]:.0f} s later. Machine:
{data["machine"]["cpus"]} CPUs, Python {data["machine"]["python"]}. {data["machine"]["note"]}

**{verdict}**: {data["requests"]:,} requests, **{data["unanswered"]} unanswered**,
**{data["status_500"]} answered 500**; first 200 {rec.get("first_200_after_restart_s")} s after
the restart, success share back to the level before the kill ({rec.get("ok_share_before_kill")})
{rec.get("share_back_s")} s after it; RSS of the gateway's processes {rss["early"] / 1024:.1f} MB
after {WARMUP_S:.0f} s, {rss["end"] / 1024:.1f} MB at the end ({rss["change_pct"]:+}%).

| status | requests |
|---|--:|
{rows}

Per {WINDOW_S:.0f}-second window (by the time a request was sent):

{head}
{chr(10).join(lines)}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--stall", type=float, default=30.0, help="seconds a stalled answer hangs")
    parser.add_argument("--down", type=float, default=10.0, help="seconds the tier stays killed")
    parser.add_argument("--note", default="", help="a line about the machine (e.g. shared)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fault-soak")
    args = parser.parse_args()
    data = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(report_md(data))
    print(report_md(data))
    ok = data["unanswered"] == 0 and data["status_500"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
