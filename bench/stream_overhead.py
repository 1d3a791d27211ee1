"""What streaming through the gateway adds, beside a direct connection to the tier.

    .venv/bin/python bench/stream_overhead.py [--requests 300] [--chunks 200] [--out FILE]

A stand-in tier (a child process: raw asyncio, SSE in vLLM's chunk format) and the gateway
(`gateway serve`, its dev tier pointed at the stand-in) run on loopback. One client (raw
asyncio sockets, the same code for both paths) sends streaming chat completions one at a
time, first straight to the tier, then through the gateway, interleaved in rounds:

- time to first token (TTFT): request sent -> the first content event arrives; the tier
  sends one content chunk, so this is the open-stream path (routing, plan, the upstream
  request, the first relay);
- per chunk: a stream of `--chunks` content events, each written and drained on its own,
  either back to back or 1 ms apart; added time = (gateway - direct) / chunks at p50, and
  the gateway's CPU (utime+stime from /proc) per chunk sent.

Targets (issue 15): TTFT +<= 1 ms at p50, +<= 0.1 ms per chunk. The results table goes to
stdout (and `--out`). Nothing but loopback is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body = {"id": "b", "object": "chat.completion.chunk", "created": 1, "model": "dev",
            "choices": [choice]}  # fmt: skip
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


ROLE = chunk("")
PIECE = chunk("tok ")
FINISH = chunk(None, "stop") + b"data: [DONE]\n\n"
_MESSAGE = {"role": "assistant", "content": "tok "}
_USAGE = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
WHOLE = json.dumps(
    {"id": "b", "object": "chat.completion", "created": 1, "model": "dev", "usage": _USAGE,
     "choices": [{"index": 0, "message": _MESSAGE, "finish_reason": "stop"}]},
    separators=(",", ":"),
).encode()  # fmt: skip


async def serve_tier(port: int) -> None:
    """The stand-in: answers /health, and streams `chunks` pieces (from the request's
    `max_tokens`) `gap` ms apart (from its `seed`)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = json.loads(await reader.readexactly(length)) if length else {}
                if head.startswith(b"GET"):
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    await writer.drain()
                    continue
                pieces, gap = body.get("max_tokens", 1), body.get("seed", 0) / 1000
                if not body.get("stream"):  # the non-streamed baseline: one JSON answer
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(WHOLE), WHOLE))  # fmt: skip
                    await writer.drain()
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
                for event in (ROLE, *[PIECE] * pieces, FINISH):
                    writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                    await writer.drain()
                    if gap and event is PIECE:
                        await asyncio.sleep(gap)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def run_tier(port: int) -> None:
    asyncio.run(serve_tier(port))


async def one_stream(port: int, pieces: int, gap_ms: int) -> tuple[float, float]:
    """(seconds to the first content event, seconds to [DONE]) for one request; ``pieces``
    0: not streamed (seconds to the whole answer, twice)."""
    ask = {"stream": pieces > 0, "max_tokens": max(pieces, 1), "seed": gap_ms}
    body = json.dumps({"model": "dev", "messages": [{"role": "user", "content": "hi"}], **ask})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: "
               b"application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
               % (len(body), body.encode()))  # fmt: skip
    started = time.perf_counter()
    writer.write(request)
    seen = b""
    first = None
    while True:
        data = await reader.read(65536)
        if not data:
            break
        seen += data
        if first is None and b'"content":"tok' in seen:
            first = time.perf_counter() - started
        if b"data: [DONE]" in seen or (pieces == 0 and seen.endswith(b"}")):
            break
    done = time.perf_counter() - started
    writer.close()
    if first is None:
        raise RuntimeError(f"no content came back: {seen[:300]!r}")
    return first, done


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


async def measure(args: argparse.Namespace, tier: int, gateway: int, gw_pid: int) -> list[str]:
    rows = []
    cases = [
        ("not streamed (baseline)", 0, 0),
        ("TTFT (1 content chunk)", 1, 0),
        (f"{args.chunks} chunks back to back", args.chunks, 0),
        (f"{args.chunks} chunks, 1 ms apart", args.chunks, 1),
    ]
    for name, pieces, gap in cases:
        count = args.requests if pieces <= 1 else max(10, args.requests // 10)
        results: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
        cpu = 0.0
        for _ in range(3):  # interleaved rounds
            for target, port in (("direct", tier), ("gateway", gateway)):
                before = cpu_s(gw_pid)
                for _ in range(count // 3):
                    results[target].append(await one_stream(port, pieces, gap))
                if target == "gateway":
                    cpu += cpu_s(gw_pid) - before
        n = len(results["gateway"])
        p50 = {t: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
               for t, v in results.items()}  # fmt: skip
        added_first = (p50["gateway"][0] - p50["direct"][0]) * 1000
        added_total = (p50["gateway"][1] - p50["direct"][1]) * 1000
        per_chunk = added_total / pieces if pieces > 1 else None
        cpu_chunk = cpu * 1000 / (n * pieces) if pieces > 1 else None
        tail = (
            f"{per_chunk:+.3f} | {cpu_chunk:.3f} |"
            if per_chunk is not None
            else f"n/a | {cpu * 1000 / n:.2f} per request |"
        )
        via, to = p50["gateway"], p50["direct"]
        rows.append(
            f"| {name} | {n} | {to[0] * 1000:.2f} | {via[0] * 1000:.2f} | "
            f"{added_first:+.2f} | {to[1] * 1000:.2f} | {via[1] * 1000:.2f} | {tail}"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    tier_port, gw_port = free_port(), free_port()
    tier = multiprocessing.Process(target=run_tier, args=(tier_port,), daemon=True)
    tier.start()
    tier_url = f"http://127.0.0.1:{tier_port}"
    env = {**os.environ, "GATEWAY_LOCAL_TIER": "off", "GATEWAY_TIER_DEV_KIND": "openai",
           "GATEWAY_TIER_DEV_URL": tier_url, "GATEWAY_ENV": "dev"}  # fmt: skip
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway.ops.cli", "serve", "--port", str(gw_port)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                asyncio.run(one_stream(gw_port, 1, 0))
                break
            except (OSError, RuntimeError):
                time.sleep(0.2)
        for _ in range(50):  # warm both paths (pools, caches)
            asyncio.run(one_stream(gw_port, 1, 0))
        rows = asyncio.run(measure(args, tier_port, gw_port, gw.pid))
    finally:
        gw.terminate()
        gw.wait(timeout=30)
        tier.terminate()
        tier.join()
    lines = [
        f"# Streaming overhead — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"Command: `.venv/bin/python bench/stream_overhead.py --requests {args.requests} "
        f"--chunks {args.chunks}`  ",
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, "
        f"python {platform.python_version()}; load average before the run: {load}"
        " (shared with other work: read the figures as upper bounds)",
        "",
        "One request at a time; p50 over interleaved rounds. TTFT = request sent -> first "
        "content event. Added per chunk = (gateway - direct) p50 to [DONE] / chunks. CPU = the "
        "gateway process's utime+stime over the gateway's requests.",
        "",
        "| case | requests | direct TTFT ms | gateway TTFT ms | added TTFT ms | direct total ms | "
        "gateway total ms | added ms per chunk | gateway CPU ms per chunk |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
