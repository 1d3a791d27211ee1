"""Hold 10,000 clients through a cold start: one `gateway serve` worker, one stand-in tier
that boots for ``--cold-s`` seconds (bench/cold_tier.py), and a separate load process that
opens ``--clients`` concurrent ``POST /generate`` requests in ``wait`` mode. Every request
must be held while the tier boots and answered 200 once it is warm: no 5xx, no dropped
connection. The gateway's RSS and CPU are sampled while it holds them.

    .venv/bin/python bench/hold_10k.py --clients 10000 --cold-s 30 --out bench/results/hold-10k

Everything runs on loopback. Writes ``OUT.json`` (all figures) and ``OUT.md`` (a summary
with the command); prints the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLE_S = 0.5
STARTUP_S = 60.0

CONFIG = """
default_tier = "prod"
tiers_file = "{tiers}"

[tiers.prod]
kind = "modal"
fallback_mode = "wait"   # hold every request until the tier is warm
[tiers.prod.timeouts]
cold = {cold_budget}     # the boot plus the time to answer 10k once warm
"""


def free_port() -> int:
    sys.path.insert(0, str(REPO))
    from gateway.ops.serving import free_port as pick

    return pick()


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- the load process ----------------------------------------------------------------------


async def load(url: str, clients: int, ramp_s: float, timeout_s: float) -> dict[str, Any]:
    import aiohttp

    body = json.dumps(
        {
            "prompt": "Name a person.",
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name", "age"],
            },
        }
    ).encode()
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    held = peak_held = 0

    async def on_connected(*_: Any) -> None:
        nonlocal held, peak_held
        held += 1
        peak_held = max(peak_held, held)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_connected)
    # One connection per client, never reused: 10k sockets held at once is the point.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trace_configs=[trace]
    ) as session:

        async def one() -> None:
            nonlocal held
            started = time.monotonic()
            try:
                async with session.post(
                    url + "/generate",
                    data=body,
                    headers={"content-type": "application/json", "x-model-tier": "prod"},
                ) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
                errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
            latencies.append(time.monotonic() - started)
            held -= 1  # answered or failed: no longer held (a failed connect never counted)

        tasks = []
        began = time.monotonic()
        for i in range(clients):
            tasks.append(asyncio.create_task(one()))
            if i % 100 == 99:  # ramp: 100 at a time, so the listen backlog never overflows
                await asyncio.sleep(ramp_s * 100 / clients)
        sent_s = time.monotonic() - began
        print(json.dumps({"event": "all_sent", "clients": clients}), flush=True)
        await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "clients": clients,
        "peak_connected_and_waiting": peak_held,
        "statuses": dict(statuses),
        "errors": dict(errors.most_common(5)),
        "sent_in_s": round(sent_s, 2),
        "latency_s": {
            "min": round(latencies[0], 2),
            "p50": round(latencies[len(latencies) // 2], 2),
            "max": round(latencies[-1], 2),
        },
    }


# -- the driver ----------------------------------------------------------------------------


def wait_http(url: str) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {STARTUP_S} s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import psutil

    python = sys.executable
    tier_port, gw_port = free_port(), free_port()
    tier_url, gw_url = f"http://127.0.0.1:{tier_port}", f"http://127.0.0.1:{gw_port}"
    workdir = Path(tempfile.mkdtemp(prefix="hold-10k-"))
    config = workdir / "gateway.toml"
    config.write_text(
        CONFIG.format(tiers=REPO / "config" / "tiers.toml", cold_budget=args.cold_s + 120)
    )
    env = {
        **os.environ,
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_LOCAL_TIER": "off",
        "GATEWAY_TIER_PROD_URL": tier_url,
        "PYTHONPATH": str(REPO),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        tier = subprocess.Popen(
            [
                python,
                str(REPO / "bench/cold_tier.py"),
                "--port",
                str(tier_port),
                "--cold-s",
                str(args.cold_s),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(tier)
        gw = subprocess.Popen(
            [python, "-m", "gateway.ops.cli", "serve", "--port", str(gw_port), "--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "gateway.log", "wb"),  # noqa: SIM115  # closed with the process
            start_new_session=True,
        )
        procs.append(gw)
        wait_http(gw_url + "/health")
        wait_http(tier_url + "/stats")
        gateway = psutil.Process(gw.pid)
        nofile = gateway.rlimit(psutil.RLIMIT_NOFILE)
        idle_rss = gateway.memory_info().rss

        loader = subprocess.Popen(
            [
                python,
                __file__,
                "--load",
                gw_url,
                "--clients",
                str(args.clients),
                "--ramp-s",
                str(args.ramp_s),
                "--timeout-s",
                str(args.cold_s + 150),
            ],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        procs.append(loader)  # type: ignore[arg-type]

        samples = []
        cpu0, t0 = gateway.cpu_times(), time.monotonic()
        booted_at = None
        while loader.poll() is None:
            time.sleep(SAMPLE_S)
            cpu, now = gateway.cpu_times(), time.monotonic()
            held = sum(
                1
                for c in gateway.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == gw_port
            )
            stats = httpx.get(tier_url + "/stats", timeout=5.0).json()
            if booted_at is None and stats["booted"]:
                booted_at = now - t0
            samples.append(
                {
                    "t_s": round(now - t0, 2),
                    "rss_mb": round(gateway.memory_info().rss / 2**20, 1),
                    "cpu_s": round(cpu.user + cpu.system - cpu0.user - cpu0.system, 2),
                    "held_client_connections": held,
                    "tier_booted": stats["booted"],
                }
            )
        out, _ = loader.communicate()
        result = json.loads(out.decode().strip().splitlines()[-1])
        tier_stats = httpx.get(tier_url + "/stats", timeout=5.0).json()
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    holding = [s for s in samples if not s["tier_booted"]]
    peak_held = max((s["held_client_connections"] for s in samples), default=0)
    cpu_hold = 0.0
    if len(holding) >= 2:
        cpu_hold = (holding[-1]["cpu_s"] - holding[0]["cpu_s"]) / (
            holding[-1]["t_s"] - holding[0]["t_s"]
        )
    at_peak = max(holding, key=lambda s: s["held_client_connections"], default=None)
    return {
        "command": " ".join([".venv/bin/python", "bench/hold_10k.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "gateway": {
            "workers": 1,
            "open_file_limit": list(nofile),
            "idle_rss_mb": round(idle_rss / 2**20, 1),
            "rss_mb_holding_peak": max((s["rss_mb"] for s in holding), default=None),
            "rss_mb_at_peak_held": at_peak["rss_mb"] if at_peak else None,
            "peak_held_client_connections": peak_held,
            "cpu_cores_while_holding": round(cpu_hold, 3),
            "rss_mb_peak_whole_run": max((s["rss_mb"] for s in samples), default=None),
            "cpu_s_whole_run": samples[-1]["cpu_s"] if samples else None,
        },
        "tier": {"cold_s": args.cold_s, "booted_at_s": booted_at, **tier_stats},
        "load": result,
        "samples": samples,
    }


def summary(report: dict[str, Any]) -> str:
    g, load_, tier = report["gateway"], report["load"], report["tier"]
    per_request_kb = (
        (g["rss_mb_at_peak_held"] - g["idle_rss_mb"])
        * 1024
        / max(g["peak_held_client_connections"], 1)
        if g["rss_mb_at_peak_held"]
        else None
    )
    ok = load_["statuses"].get("200", 0)
    lines = [
        "# Holding 10,000 clients through a cold start (one worker)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']['cpus']} CPUs (shared), Python {report['machine']['python']},"
        f" Linux {report['machine']['kernel']}; everything on loopback; the load is a separate"
        " process (aiohttp, one connection per client).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| clients | {load_['clients']} (all sent in {load_['sent_in_s']} s) |",
        f"| answers | {json.dumps(load_['statuses'])} |",
        f"| answered 200 | {ok} of {load_['clients']} |",
        f"| clients connected and waiting at once, peak (load side) |"
        f" {load_['peak_connected_and_waiting']} |",
        f"| held client connections, peak (gateway side, sampled) |"
        f" {g['peak_held_client_connections']} |",
        f"| gateway RSS idle | {g['idle_rss_mb']} MB |",
        f"| gateway RSS holding them (peak) | {g['rss_mb_holding_peak']} MB |",
        f"| per held request | {per_request_kb:.1f} KB |"
        if per_request_kb
        else "| per held request | n/a |",
        f"| gateway CPU while holding | {g['cpu_cores_while_holding']} cores |",
        f"| gateway RSS peak, whole run (answering included) | {g['rss_mb_peak_whole_run']} MB |",
        f"| gateway CPU, whole run | {g['cpu_s_whole_run']} s |",
        f"| tier cold start | {tier['cold_s']} s; warm-up requests to it: {tier['health_calls']} |",
        f"| latency (s) | {json.dumps(load_['latency_s'])} |",
        f"| open-file limit (soft, hard) | {g['open_file_limit']} |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--cold-s", type=float, default=30.0)
    parser.add_argument("--ramp-s", type=float, default=5.0)
    parser.add_argument("--timeout-s", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # the load process
    args = parser.parse_args()
    raise_nofile()
    if args.load:
        result = asyncio.run(load(args.load, args.clients, args.ramp_s, args.timeout_s))
        print(json.dumps(result), flush=True)
        return
    report = run(args)
    text = summary(report)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
