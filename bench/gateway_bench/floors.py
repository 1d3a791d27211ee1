"""What a Python hop costs on this machine, before the gateway does anything: the floors
that docs/benchmarks.md compares the gateway against.

    python bench/gateway_bench/floors.py --duration 8 --repeat 2    # ~3 min on 2 cores

Each variant is a tiny ASGI app under uvicorn (uvloop, httptools, one worker; as
``gateway serve`` runs), loaded by wrk at c=16 with the chat request, in front of the same
nginx stub as the main benchmark. Rounds are interleaved. CPU per request is the server
process's utime+stime over the requests wrk counted. Writes bench/results/floors.md.

Variants:
- ``asgi-fixed``: answers the stub's body itself (no upstream): uvicorn's own cost.
- ``litestar-fixed``: a Litestar ``@post`` handler (``Request`` in, ``Response`` out), same.
- ``asgi-h1``: forwards the body with one ``gateway.routing.tier_http.AiohttpExchanger`` call.
- ``asgi-httpx``: forwards with ``httpx.AsyncClient`` (httpx's default transport).
- ``asgi-aiohttp``: forwards with one ``aiohttp.ClientSession`` call (when aiohttp is
  installed; it is not a dependency of the gateway).
- ``gateway``: ``gateway serve`` itself, schema checks on.

    python bench/gateway_bench/floors.py serve VARIANT PORT UPSTREAM   # one app (internal)
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import measure
import payloads
import services
from litestar import Litestar, Request, Response, get, post

REPO = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
VARIANTS = ("asgi-fixed", "litestar-fixed", "asgi-h1", "asgi-httpx", "asgi-aiohttp", "gateway")


async def _read(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _asgi(forward: Any) -> Any:
    """A raw ASGI app: /health answers {}, anything else is forwarded (or answered)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await _read(receive)
        out = b"{}" if scope["path"] == "/health" else await forward(body)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(out))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def litestar_fixed(fixed: bytes) -> Litestar:
    @post(CHAT, status_code=200)
    async def chat(request: Request[Any, Any, Any]) -> Response[bytes]:
        await request.body()
        return Response(content=fixed, media_type="application/json")

    @get("/health")
    async def health() -> dict[str, str]:
        return {}

    return Litestar([chat, health], logging_config=None)


def build(variant: str, upstream: str) -> Any:
    fixed = payloads.chat_completion()
    if variant == "asgi-fixed":

        async def answer(body: bytes) -> bytes:
            return fixed

        return _asgi(answer)
    if variant == "litestar-fixed":
        return litestar_fixed(fixed)
    if variant == "asgi-h1":
        from gateway.routing.tier_http import AiohttpExchanger, RawRequest

        exchanger = AiohttpExchanger()
        request = RawRequest("POST", upstream + CHAT, (("content-type", "application/json"),))

        async def h1(body: bytes) -> bytes:
            reply = await exchanger.exchange(request._replace(body=body), connect_timeout=10.0)
            return reply.body

        return _asgi(h1)
    if variant == "asgi-httpx":
        import httpx

        clients: list[httpx.AsyncClient] = []

        async def via_httpx(body: bytes) -> bytes:
            if not clients:
                clients.append(httpx.AsyncClient(base_url=upstream))
            response = await clients[0].post(
                CHAT, content=body, headers={"content-type": "application/json"}
            )
            return response.content

        return _asgi(via_httpx)
    if variant == "asgi-aiohttp":
        import aiohttp

        sessions: list[aiohttp.ClientSession] = []

        async def via_aiohttp(body: bytes) -> bytes:
            if not sessions:
                sessions.append(aiohttp.ClientSession())
            async with sessions[0].post(
                upstream + CHAT, data=body, headers={"content-type": "application/json"}
            ) as response:
                return await response.read()

        return _asgi(via_aiohttp)
    raise SystemExit(f"unknown variant {variant!r}")


def serve(variant: str, port: int, upstream: str) -> None:
    import uvicorn

    uvicorn.run(
        build(variant, upstream),
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


def start(variant: str, upstream: str, workdir: Path) -> services.Service:
    port = services.free_port()
    if variant == "gateway":
        argv = [sys.executable, "-m", "gateway.ops.cli", "serve", "--port", str(port)]
        env = services.gateway_env(upstream)
    else:
        argv = [sys.executable, __file__, "serve", variant, str(port), upstream]
        env = services.gateway_env(upstream)
    env["PYTHONPATH"] = str(REPO)
    return services.Service(variant, argv, port, "/health", log=workdir / f"{variant}.log", env=env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=8.0, help="seconds per point")
    p.add_argument("--repeat", type=int, default=2, help="interleaved rounds")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "floors.md"))
    args = p.parse_args()

    variants = [v for v in VARIANTS if v != "asgi-aiohttp" or importlib.util.find_spec("aiohttp")]
    workdir = Path(tempfile.mkdtemp(prefix="floors-"))
    stub_port = services.free_port()
    stub = services.start_nginx("stub", services.stub_conf(workdir, stub_port), stub_port, workdir)
    stub.wait_ready()
    body = workdir / "chat.json"
    body.write_bytes(payloads.chat_request())
    load = measure.Load("post.lua", CHAT, body)
    apps = {v: start(v, stub.url, workdir) for v in variants}
    rows: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    try:
        for app in apps.values():
            app.wait_ready()
            measure.wrk(app.url, load, connections=4, duration_s=1)  # warm
        for round_ in range(args.repeat):
            order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
            for v in order:
                root = apps[v].proc.pid
                result, cpu_s, _ = measure.measured(
                    root,
                    lambda v=v: measure.wrk(
                        apps[v].url, load, connections=args.connections, duration_s=args.duration
                    ),
                )
                if result["errors"]:
                    raise SystemExit(f"{v}: {result['errors']:.0f} errors")
                rows[v].append((result["rps"], cpu_s * 1000 / result["requests"]))
                print(f"{v:15} {rows[v][-1][0]:9.0f} req/s {rows[v][-1][1]:.3f} ms CPU/req")
    finally:
        for app in apps.values():
            app.stop()
        stub.stop()

    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Floors: what one Python hop costs here — {stamp}",
        "",
        f"Command: `python bench/gateway_bench/floors.py --duration {args.duration:g} "
        f"--repeat {args.repeat}`  ",
        f"uvicorn 1 worker (uvloop, httptools), wrk -t1 -c{args.connections}, chat request, "
        "nginx stub upstream; medians over interleaved rounds (min-max).",
        "",
        "| variant | req/s | CPU ms/req |",
        "|---|--:|--:|",
    ]
    for v in variants:
        rps = [r for r, _ in rows[v]]
        cpu = [c for _, c in rows[v]]
        lines.append(
            f"| {v} | {statistics.median(rps):,.0f} ({min(rps):,.0f}-{max(rps):,.0f}) "
            f"| {statistics.median(cpu):.3f} ({min(cpu):.3f}-{max(cpu):.3f}) |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
