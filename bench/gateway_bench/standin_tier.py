"""The benchmarks' stand-in tier: OpenAI-compatible enough for the gateway (``GET /health``,
``POST /v1/chat/completions``), asyncio and standard library only, so one process holds tens
of thousands of requests and starts in a fraction of a second after a ``kill -9``.

- Every completion is held ``--hold`` seconds (a tier generating), then answered with the
  benchmarks' vLLM-shaped chat.completion (``payloads.py``): its ticket triage, or
  ``--content``.
- With probability ``--fault-rate`` a completion fails instead, one of these at random:
  ``5xx`` (500 or 503 with a vLLM-shaped error body), ``reset`` (the connection is reset,
  SO_LINGER 0, once the request is read), ``stall`` (nothing for ``--stall`` seconds, then
  the connection closes), ``garbage`` (a 200 whose body is not JSON, or bytes that are not
  HTTP at all).
- ``GET /stats`` answers the most requests it held at one time and how many it served, so a
  harness can check a hold really reached the concurrency it asked for.

It exits by itself after ``--lifetime`` seconds: it never outlives a forgotten run.

    python bench/gateway_bench/standin_tier.py --port 9001 --hold 5               # hold-10k
    python bench/gateway_bench/standin_tier.py --port 9001 --fault-rate 0.1 \
        --content '{"name": "Ada", "age": 36}'                                    # fault soak
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct

import payloads  # beside this file: a script's own folder is on sys.path

FAULTS = ("5xx", "reset", "stall", "garbage")


class Counter:
    inflight = 0
    peak = 0
    served = 0


def _response(body: bytes, status: str = "200 OK", ctype: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:  # linger 0: close() sends RST instead of FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _fail(kind: str, writer: asyncio.StreamWriter, rng: random.Random, stall: float) -> bool:
    """Send one fault; return whether the connection may carry another request."""
    if kind == "5xx":
        status = rng.choice(("500 Internal Server Error", "503 Service Unavailable"))
        error = {"object": "error", "message": "soak fault", "type": "InternalServerError"}
        writer.write(_response(json.dumps(error).encode(), status))
        return True
    if kind == "reset":
        _reset(writer)
        return False
    if kind == "stall":
        await asyncio.sleep(stall)
        writer.close()
        return False
    if rng.random() < 0.5:
        writer.write(_response(b"<html>upstream error \xff\xfe</html>", ctype="application/json"))
        return True
    writer.write(b"\x00\xffNOT-HTTP garbage\r\n\r\n" + bytes(rng.randrange(256) for _ in range(64)))
    writer.close()
    return False


async def _complete(writer: asyncio.StreamWriter, args: argparse.Namespace) -> bool:
    """Answer one completion (or fail it); return whether the connection carries on."""
    rng: random.Random = args.rng
    if args.fault_rate and rng.random() < args.fault_rate:
        return await _fail(rng.choice(FAULTS), writer, rng, args.stall)
    Counter.inflight += 1
    Counter.peak = max(Counter.peak, Counter.inflight)
    try:
        await asyncio.sleep(args.hold)
    finally:
        Counter.inflight -= 1
    Counter.served += 1
    writer.write(_response(args.body))
    return True


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace
) -> None:
    try:
        while True:  # keep-alive: one request after another on this connection
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            if method == "POST" and path.endswith("/chat/completions"):
                if not await _complete(writer, args):
                    return
            elif path == "/stats":
                stats = {"peak_inflight": Counter.peak, "served": Counter.served}
                writer.write(_response(json.dumps(stats).encode()))
            elif path == "/health":
                writer.write(_response(b"{}"))
            else:
                writer.write(_response(b'{"error":"not found"}', "404 Not Found"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args),
        "127.0.0.1",
        args.port,
        backlog=1024,  # a hold test opens thousands of connections at once
        reuse_address=True,  # restarted on its port after a kill -9
    )
    print(f"stand-in tier on 127.0.0.1:{args.port}", flush=True)
    async with server:
        await asyncio.sleep(args.lifetime)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hold", type=float, default=0.005, help="seconds per good answer")
    parser.add_argument("--content", default=None, help="answer text (default: a triage)")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--stall", type=float, default=30.0, help="seconds a stall holds")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--lifetime", type=float, default=3600.0)
    arguments = parser.parse_args()
    arguments.rng = random.Random(arguments.seed)
    arguments.body = payloads.chat_completion(arguments.content)
    asyncio.run(main(arguments))
