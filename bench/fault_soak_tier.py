"""A stand-in tier that fails a share of its answers in mixed ways, for ``fault_soak.py``.

OpenAI-compatible enough for the gateway (``GET /health``, ``POST /v1/chat/completions``);
with probability ``--fault-rate`` a completion fails instead, one of these in turn at random:

- ``5xx``: 500 or 503 with a vLLM-shaped error body
- ``reset``: the connection is reset (SO_LINGER 0) once the request is read
- ``stall``: nothing is sent for ``--stall`` seconds, then the connection closes
- ``garbage``: a 200 whose body is not JSON, or bytes that are not HTTP at all

Standard library only, so it starts in a fraction of a second after a ``kill -9``.

    python bench/fault_soak_tier.py --port 9001 --fault-rate 0.1 --stall 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct

CONTENT = '{"name": "Ada", "age": 36}'
FAULTS = ("5xx", "reset", "stall", "garbage")


def _completion() -> bytes:
    body = {
        "id": "chatcmpl-soak",
        "object": "chat.completion",
        "created": 1,
        "model": "dev",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": CONTENT},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }
    return json.dumps(body).encode()


OK_BODY = _completion()


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


async def handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace
) -> None:
    rng: random.Random = args.rng
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
                if rng.random() < args.fault_rate:
                    if not await _fail(rng.choice(FAULTS), writer, rng, args.stall):
                        return
                else:
                    await asyncio.sleep(args.latency)
                    writer.write(_response(OK_BODY))
            elif path == "/health":
                writer.write(_response(b"{}"))
            else:
                writer.write(_response(b"{}", "404 Not Found"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args), "127.0.0.1", args.port, reuse_address=True
    )
    print(f"fault tier on 127.0.0.1:{args.port}", flush=True)
    async with server:
        await asyncio.sleep(args.lifetime)  # a backstop: never outlives a forgotten soak


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--stall", type=float, default=30.0, help="seconds a stall holds")
    parser.add_argument("--latency", type=float, default=0.005, help="seconds per good answer")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--lifetime", type=float, default=3600.0)
    arguments = parser.parse_args()
    arguments.rng = random.Random(arguments.seed)
    asyncio.run(main(arguments))
