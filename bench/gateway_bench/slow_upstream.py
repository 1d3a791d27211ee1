"""A slow OpenAI-compatible upstream: holds every chat completion ``--hold`` seconds.

Used to keep many requests in flight inside the gateway while its RSS is sampled. Answers
``GET /health`` at once and ``GET /stats`` with the most requests it held at one time, so
the harness can check the hold really reached the concurrency it asked for. Exits by itself
after ``--lifetime`` seconds.

    python slow_upstream.py --port 9001 --hold 5
"""

from __future__ import annotations

import argparse
import asyncio
import json

import payloads

BODY = payloads.chat_completion()


class Counter:
    inflight = 0
    peak = 0
    served = 0


def _response(body: bytes, status: str = "200 OK") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: float) -> None:
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
                Counter.inflight += 1
                Counter.peak = max(Counter.peak, Counter.inflight)
                try:
                    await asyncio.sleep(hold)
                finally:
                    Counter.inflight -= 1
                Counter.served += 1
                writer.write(_response(BODY))
            elif path == "/stats":
                stats = {"peak_inflight": Counter.peak, "served": Counter.served}
                writer.write(_response(json.dumps(stats).encode()))
            elif path == "/health":
                writer.write(_response(b"{}"))
            else:
                writer.write(_response(b'{"error":"not found"}', "404 Not Found"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--lifetime", type=float, default=900.0)
    args = parser.parse_args()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.hold), "127.0.0.1", args.port, backlog=1024
    )
    async with server:
        await asyncio.sleep(args.lifetime)


if __name__ == "__main__":
    asyncio.run(main())
