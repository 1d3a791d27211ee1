"""The gateway overhead benchmark: one command, every target in one interleaved run.

    bench/gateway_bench.sh --duration 20 --repeat 2           # the full run
    bench/gateway_bench.sh --duration 5 --repeat 1 --no-litellm   # a quick check

Targets, all answering the same wrk load (post.lua: a json_schema chat completion):
direct (the nginx stub itself: zero overhead), nginx (a plain reverse proxy to the stub: the
floor for one HTTP hop), litellm (the peer) and gateway (``gateway serve``), plus
gateway-nocheck (schema checks off: --nocheck-app, or --nocheck-env once a setting exists).
Then /generate on the gateway, the peak-RSS hold (256 requests held by a slow upstream)
and, with --servers, the ASGI server comparison.
Results: bench/results/gateway-overhead.{md,json,png}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import measure
import payloads
import report
import services
from services import Service

RESULTS = services.REPO / "bench" / "results"
SERVERS = {  # the server comparison: the same app factory under each server's own CLI
    "uvicorn": [
        *(sys.executable, "-m", "uvicorn", "gateway.app:app_from_env", "--factory"),
        *("--host", "127.0.0.1", "--port", "{port}", "--workers", "{workers}", "--loop", "uvloop"),
        *("--http", "httptools", "--log-level", "warning", "--no-access-log"),
    ],
    "granian": [
        *(sys.executable, "-m", "granian", "--interface", "asgi", "--factory"),
        *("--host", "127.0.0.1", "--port", "{port}", "--workers", "{workers}", "--loop", "uvloop"),
        *("--log-level", "warning", "--no-access-log", "gateway.app:app_from_env"),
    ],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds per point")
    p.add_argument("--repeat", type=int, default=2, help="interleaved rounds")
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--workers", type=int, default=1, help="gateway, LiteLLM and nginx workers")
    p.add_argument("--no-litellm", action="store_true", help="skip the peer (no venv needed)")
    p.add_argument("--nocheck-env", default="", help="KEY=VALUE turning schema checks off")
    p.add_argument(
        "--nocheck-app",
        action="store_true",
        help="also run nocheck_serve.py (gateway serve, schema checks off) as gateway-nocheck",
    )
    p.add_argument("--hold", type=int, default=256, help="requests held for peak RSS (0: skip)")
    p.add_argument("--servers", action="store_true", help="also compare uvicorn and granian")
    p.add_argument("--out", default=str(RESULTS / "gateway-overhead"))
    p.add_argument(
        "--baseline",
        default="",
        help="also run `gateway serve` from this git revision (git archive), interleaved with "
        "the working tree, as target gateway@REV: what a change cost, on the same load",
    )
    return p.parse_args(argv)


def versions() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        r = subprocess.run(argv, capture_output=True, text=True, check=False)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr) else "?"

    from importlib import metadata

    found = {
        "python": platform.python_version(),
        "nginx": out(["nginx", "-v"]),
        "wrk": out(["wrk", "-v"]),
        "kernel": platform.release(),
        "cpus": out(["nproc"]),
        "cpu": next(
            (
                x.split(":", 1)[1].strip()
                for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")
            ),
            "?",
        ),
    }
    for dist in ("litestar", "msgspec", "httpx", "httptools", "uvicorn", "granian", "uvloop"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    litellm = services.LITELLM_VENV / "bin" / "python"
    if litellm.exists():
        found["litellm"] = out(
            [str(litellm), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
        )
    return found


def warm(svc: Service, load: measure.Load) -> None:
    measure.wrk(svc.url, load, connections=8, duration_s=2)


def point(svc: Service, load: measure.Load, c: int, duration: float) -> dict[str, float]:
    result, cpu_s, _ = measure.measured(
        svc.proc.pid, lambda: measure.wrk(svc.url, load, connections=c, duration_s=duration)
    )
    result["cpu_s"] = cpu_s
    result["cpu_ms_per_req"] = 1000 * cpu_s / max(result["requests"], 1)
    return result


def interleaved(
    targets: dict[str, tuple[Service, measure.Load]], conc: list[int], args: argparse.Namespace
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    names = list(targets)
    for rnd in range(args.repeat):
        for c in conc:
            order = names[rnd % len(names) :] + names[: rnd % len(names)]  # rotate each round
            for name in order:
                svc, load = targets[name]
                res = point(svc, load, c, args.duration)
                rows.append({"target": name, "c": c, "round": rnd, **res})
                print(
                    f"  round {rnd} c={c:<3} {name:<16} {res['rps']:9.1f} rps  "
                    f"p50 {res['p50_us'] / 1000:7.2f} ms  cpu {res['cpu_ms_per_req']:.3f} ms/req"
                    f"  errors {res['errors']:g}",
                    flush=True,
                )
    return rows


def hold_test(workdir: Path, load: measure.Load, n: int, workers: int) -> dict[str, float]:
    """Peak RSS of the gateway with ``n`` requests held in flight by a slow upstream."""
    hold_s = 8.0
    slow = services.start_slow(workdir, hold_s)
    slow.wait_ready()
    gw = services.start_gateway(workdir, slow.url, workers, name="gateway-hold")
    try:
        gw.wait_ready()
        idle = measure.rss_mb(gw.proc.pid)
        with measure.RssSampler(gw.proc.pid) as sampler:
            res = measure.wrk(gw.url, load, connections=n, duration_s=hold_s + 4, timeout_s=30)
        with urllib.request.urlopen(slow.url + "/stats", timeout=5) as resp:
            stats = json.loads(resp.read())
        return {
            "held": n,
            "hold_s": hold_s,
            "upstream_peak_inflight": stats["peak_inflight"],
            "idle_rss_mb": idle,
            "peak_rss_mb": sampler.peak_mb,
            "peak_pss_mb": sampler.peak_pss_mb,
            "vmhwm_sum_mb": measure.hwm_mb(gw.proc.pid),
            "requests": res["requests"],
            "errors": res["errors"],
        }
    finally:
        gw.stop()
        slow.stop()


def start_baseline(work: Path, rev: str, upstream: str, workers: int) -> Service:
    """``gateway serve`` from ``rev``'s tree: its own copy, first on ``sys.path``."""
    tree = work / "baseline"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", rev], cwd=services.REPO, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return services.start_gateway(
        work,
        upstream,
        workers,
        name=f"gateway@{rev}",
        extra_env={"PYTHONPATH": str(tree)},
        cwd=tree,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    conc = [int(x) for x in args.concurrency.split(",")]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        work = Path(tmp)
        chat_body, gen_body = work / "chat.json", work / "generate.json"
        chat_body.write_bytes(payloads.chat_request())
        gen_body.write_bytes(payloads.generate_request())
        chat = measure.Load("post.lua", "/v1/chat/completions", chat_body)
        chat_keyed = measure.Load(
            "post.lua", "/v1/chat/completions", chat_body, payloads.MASTER_KEY
        )
        gen = measure.Load("post.lua", "/generate", gen_body)

        started_svcs: list[Service] = []
        try:
            port = services.free_port()
            stub = services.start_nginx("stub", services.stub_conf(work, port), port, work)
            started_svcs.append(stub)
            stub.wait_ready()
            port = services.free_port()
            conf = services.proxy_conf(work, port, stub.port, args.workers)
            proxy = services.start_nginx("proxy", conf, port, work)
            started_svcs.append(proxy)
            gw = services.start_gateway(work, stub.url, args.workers)
            started_svcs.append(gw)
            targets = {"direct": (stub, chat), "nginx": (proxy, chat), "gateway": (gw, chat)}
            if args.nocheck_env:
                key, _, value = args.nocheck_env.partition("=")
                gw_off = services.start_gateway(
                    work, stub.url, args.workers, name="gateway-nocheck", extra_env={key: value}
                )
                started_svcs.append(gw_off)
                targets["gateway-nocheck"] = (gw_off, chat)
            if args.nocheck_app and not args.nocheck_env:
                gw_off = services.start_gateway(
                    work,
                    stub.url,
                    args.workers,
                    name="gateway-nocheck",
                    server_argv=[
                        sys.executable,
                        str(services.HERE / "nocheck_serve.py"),
                        *("serve", "--port", "{port}", "--workers", "{workers}"),
                    ],
                )
                started_svcs.append(gw_off)
                targets["gateway-nocheck"] = (gw_off, chat)
            if not args.no_litellm:
                llm = services.start_litellm(work, stub.url, args.workers)
                started_svcs.append(llm)
                targets["litellm"] = (llm, chat_keyed)
            startup = {svc.name: round(svc.wait_ready(), 2) for svc in started_svcs}
            print(f"ready: {startup}", flush=True)
            for svc, load in targets.values():
                warm(svc, load)
            targets["gateway /generate"] = (gw, gen)
            if args.baseline:
                base = start_baseline(work, args.baseline, stub.url, args.workers)
                started_svcs.append(base)
                base.wait_ready()
                warm(base, chat)
                targets[base.name] = (base, chat)
                targets[f"{base.name} /generate"] = (base, gen)
            rows = interleaved(targets, conc, args)
            peak = {"gateway_vmhwm_sum_mb": measure.hwm_mb(gw.proc.pid)}
        finally:
            for svc in reversed(started_svcs):
                svc.stop()
        hold = hold_test(work, chat, args.hold, args.workers) if args.hold else None
        servers = server_comparison(work, chat, conc, args) if args.servers else None

    data = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "command": " ".join(["bench/gateway_bench.sh", *(argv or sys.argv[1:])]),
        "args": vars(args),
        "versions": versions(),
        "startup_s": startup,
        "rows": rows,
        "peak": peak,
        "hold": hold,
        "servers": servers,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    out.with_suffix(".md").write_text(report.markdown(data))
    print(out.with_suffix(".md").read_text())
    plot = services.REPO / "bench" / ".venv-plot" / "bin" / "python"
    if plot.exists():  # matplotlib lives in its own venv (see gateway_bench.sh)
        chart = Path(__file__).with_name("chart.py")
        subprocess.run([str(plot), str(chart), str(out.with_suffix(".json"))], check=False)
    return 0


def server_comparison(
    work: Path, load: measure.Load, conc: list[int], args: argparse.Namespace
) -> list[dict[str, object]]:
    """The gateway app under uvicorn and granian, 1 and 2 workers, interleaved."""
    port = services.free_port()
    stub = services.start_nginx("stub2", services.stub_conf(work, port), port, work)
    svcs: list[Service] = [stub]
    try:
        stub.wait_ready()
        targets: dict[str, tuple[Service, measure.Load]] = {"direct": (stub, load)}
        for server, argv in SERVERS.items():
            for workers in (1, 2):
                name = f"{server} x{workers}"
                svc = services.start_gateway(
                    work, stub.url, workers, name=name.replace(" ", "-"), server_argv=argv
                )
                svcs.append(svc)
                targets[name] = (svc, load)
        for svc, _ in targets.values():
            svc.wait_ready()
            warm(svc, load)
        return interleaved(targets, [c for c in conc if c > 1], args)
    finally:
        for svc in reversed(svcs):
            svc.stop()


if __name__ == "__main__":
    raise SystemExit(main())
