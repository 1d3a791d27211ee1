"""A hostile stand-in tier: a real asyncio server on loopback, in a thread of its own, that
answers each chat completion with the next scripted fault (or a good answer).

>>> with HostileTier() as tier:
...     tier.script("early_hints")          # the next POST gets 103, then its answer
...     settings = make_settings(GATEWAY_TIER_DEV_URL=tier.url)

A good answer names the request it answers: its content is
``{"name": "<the request's X-Request-Id>", "age": 36}``, so a test can tell whether an answer
went to the request that asked for it. ``GET /health`` always answers 200; ``/result/<n>``
(the 303 chain) and ``/loop`` (a redirect loop) are the redirect targets; every request is
recorded in ``tier.seen``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import struct
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from gateway.routing.tier_client import TierClient
from gateway.settings import load_settings

FAULTS = (
    "ok",
    "continue_100",  # 100 Continue, then the answer
    "early_hints",  # 103 Early Hints, a pause, then the answer (late: the old client's bug)
    "huge_headers",  # 2,000 header lines
    "huge_header_line",  # one 1 MiB header line
    "huge_body",  # Content-Length past the cap, and the bytes to match
    "huge_chunked",  # chunked, no length, past the cap
    "gzip_bomb",  # 8 MiB of zeros in ~8 KiB of gzip, unasked for
    "truncated",  # Content-Length 1000, 10 bytes, close
    "reset",  # half a body, then a TCP reset
    "bad_chunking",  # a chunk size that is not hex
    "cl_te",  # Content-Length and Transfer-Encoding: chunked together
    "garbage",  # not HTTP
    "drip",  # the head, then the body at 1 byte/s
    "drip_head",  # the head itself at 1 byte/s
    "extra_after",  # the answer, then (in the same write) the start of another
    "unsolicited",  # the answer, then a whole second answer a moment later, unasked
    "location_malformed",  # 307 to http://[::1/x
    "location_foreign",  # 307 to another port on loopback
    "redirect_loop",  # 307 to /loop, which redirects to itself
    "chain_303",  # 303 to /result/1 -> /result/2 -> answer
    "deep_json",  # an answer with 100,000 nested arrays in an extra field
    "invalid_utf8",  # an answer whose content holds a 0xff byte
    "deep_output",  # a well-formed answer whose model output nests 100,000 deep
    "stream",  # a chunked answer sent in parts (for streams), 50 ms apart
    "stream_stall",  # the head and one chunk, then silence
)
BOMB = gzip.compress(b"\0" * (8 * 1024 * 1024))


class Seen(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def completion_for(request_id: str) -> bytes:
    content = json.dumps({"name": request_id, "age": 36})
    return json.dumps(
        {
            "id": "chatcmpl-hostile",
            "object": "chat.completion",
            "created": 1,
            "model": "hostile",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()


def head(status: str, *headers: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode()


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    return (
        head(status, f"content-length: {len(body)}", "content-type: application/json", *headers)
        + body
    )


class HostileTier:
    """Start with ``with``; ``script(*faults)`` queues the answers to the next POSTs."""

    def __init__(self) -> None:
        self._faults: deque[str] = deque()
        self.seen: list[Seen] = []
        self.connections = 0
        self.foreign_hits = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []
        self.foreign_url = ""

    def script(self, *faults: str) -> None:
        for fault in faults:
            assert fault in FAULTS, fault
        self._faults.extend(faults)

    def __enter__(self) -> HostileTier:
        self._thread.start()
        self.url = self._run(self._listen(self._serve))
        self.foreign_url = self._run(self._listen(self._foreign))
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    async def _listen(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        self._servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def _foreign(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.foreign_hits += 1  # nobody should ever get here
        writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> Seen:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        seen = Seen(method, path, headers, body)
        self.seen.append(seen)
        return seen

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await self._read(reader)
                if not await self._answer(request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _answer(self, request: Seen, writer: asyncio.StreamWriter) -> bool:
        """Write the answer; False: the connection is finished."""
        rid = request.headers.get("x-request-id", "")
        good = completion_for(rid)  # the body of a good answer for this request
        if request.path == "/health":
            writer.write(answer(b'{"status":"ok"}'))
            return True
        if request.path.startswith("/result/"):
            hop = int(request.path.rsplit("/", 1)[1])
            if hop < 2:
                writer.write(answer(b"", f"location: /result/{hop + 1}", status="303 See Other"))
            else:
                writer.write(answer(good))
            return True
        if request.path == "/loop":
            writer.write(answer(b"", "location: /loop", status="307 Temporary Redirect"))
            return True
        fault = self._faults.popleft() if self._faults else "ok"
        return await FAULT_WRITERS[fault](self, writer, good)


async def _ok(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(answer(good))
    return True


async def _continue_100(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("100 Continue"))
    await w.drain()
    await asyncio.sleep(0.05)
    w.write(answer(good))
    return True


async def _early_hints(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("103 Early Hints", "link: </style.css>; rel=preload"))
    await w.drain()
    await asyncio.sleep(0.3)  # the old client answered the 103 and gave this to the next call
    w.write(answer(good))
    return True


async def _huge_headers(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("200 OK", *(f"x-h{i}: {'v' * 50}" for i in range(2000))))
    return False


async def _huge_header_line(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("200 OK", "x-big: " + "v" * (1024 * 1024), "content-length: 0"))
    return False


async def _huge_body(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    size = 4 * 1024 * 1024
    w.write(head("200 OK", f"content-length: {size}"))
    for _ in range(size // 65536):
        w.write(b"x" * 65536)
        await w.drain()
    return False


async def _huge_chunked(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("200 OK", "transfer-encoding: chunked"))
    for _ in range(64):
        w.write(b"10000\r\n" + b"x" * 65536 + b"\r\n")
        await w.drain()
    w.write(b"0\r\n\r\n")
    return False


async def _gzip_bomb(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(answer(BOMB, "content-encoding: gzip"))
    return True


async def _truncated(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("200 OK", "content-length: 1000") + good[:10])
    return False


async def _reset(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("200 OK", f"content-length: {len(good)}") + good[:20])
    await w.drain()
    await asyncio.sleep(0.05)
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()  # RST, not FIN
    return False


async def _bad_chunking(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("200 OK", "transfer-encoding: chunked") + b"zz\r\n" + good + b"\r\n0\r\n\r\n")
    return False


async def _cl_te(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(
        head("200 OK", "content-length: 5", "transfer-encoding: chunked")
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(good), good)
    )
    return False


async def _garbage(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(b"SPDY/9 banana\r\n\r\n\x00\x01\x02")
    return False


async def _drip(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("200 OK", f"content-length: {len(good)}"))
    for byte in good:
        w.write(bytes([byte]))
        await w.drain()
        await asyncio.sleep(1.0)
    return False


async def _drip_head(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    for byte in answer(b"{}"):
        w.write(bytes([byte]))
        await w.drain()
        await asyncio.sleep(1.0)
    return False


async def _extra_after(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(answer(good) + b'HTTP/1.1 200 OK\r\ncontent-length: 4000\r\n\r\n{"id":')
    return True  # and keep the connection: the pool must not


async def _unsolicited(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(answer(good))
    await w.drain()
    await asyncio.sleep(0.1)
    w.write(answer(completion_for("someone-else")))  # unasked: must answer nobody
    return True


async def _location_malformed(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(answer(b"", "location: http://[::1/x", status="307 Temporary Redirect"))
    return True


async def _location_foreign(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(answer(b"", f"location: {tier.foreign_url}/steal", status="307 Temporary Redirect"))
    return True


async def _redirect_loop(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(answer(b"", "location: /loop", status="307 Temporary Redirect"))
    return True


async def _chain_303(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(answer(b"", "location: /result/0", status="303 See Other"))
    return True


async def _deep_json(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    deep = b"[" * 100_000 + b"]" * 100_000
    w.write(answer(good[:-1] + b',"extra":' + deep + b"}"))
    return True


async def _invalid_utf8(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(answer(good.replace(b'"name', b'"\xffname', 1)))
    return True


async def _deep_output(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    body = json.loads(good)
    body["choices"][0]["message"]["content"] = "[" * 100_000 + "]" * 100_000
    w.write(answer(json.dumps(body).encode()))
    return True


async def _stream(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("200 OK", "transfer-encoding: chunked", "content-type: text/event-stream"))
    for part in (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"):
        w.write(b"%x\r\n%s\r\n" % (len(part), part))
        await w.drain()
        await asyncio.sleep(0.05)
    w.write(b"0\r\n\r\n")
    return True


async def _stream_stall(tier: HostileTier, w: asyncio.StreamWriter, good: bytes) -> bool:
    w.write(head("200 OK", "transfer-encoding: chunked") + b"9\r\ndata: 1\n\n\r\n")
    await w.drain()
    await asyncio.sleep(3600)
    return False


Writer = Callable[[HostileTier, asyncio.StreamWriter, bytes], Awaitable[bool]]
FAULT_WRITERS: dict[str, Writer] = {
    name: globals()["_" + name]  # one writer per fault, named after it
    for name in FAULTS
}


def tier_client(url: str) -> TierClient:
    """The shipping tier client (aiohttp, no injected transport) for tier ``dev`` at ``url``."""
    settings = load_settings(
        environ={
            "GATEWAY_TIER_DEV_URL": url,
            "GATEWAY_TIER_DEV_KIND": "openai",
            "GATEWAY_LOCAL_TIER": "off",
        }
    )
    return TierClient(settings.tiers["dev"], settings)  # no transport: aiohttp
