"""CPU per tier call of the client alone: 16 concurrent callers against a minimal asyncio
stub (same process, uvloop) answering a fixed chat.completion.

    .venv/bin/python bench/tier_client_micro.py                 # AiohttpExchanger
    git show 0679047:gateway/transport.py > /tmp/old_transport.py
    .venv/bin/python bench/tier_client_micro.py --old /tmp/old_transport.py   # H1Transport

Results: bench/results/tier-client.md. The stub's own CPU is included in both figures.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from gateway.routing.tier_http import AiohttpExchanger, RawRequest

BODY = (
    b'{"id":"x","model":"dev","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"{}"},"finish_reason":"stop"}]}'
)
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)
HEADERS = (
    ("user-agent", "bench"),
    ("accept-encoding", "identity"),
    ("content-type", "application/json"),
    ("x-request-id", "abc"),
)
PAYLOAD = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


class Stub(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.transport.write(ANSWER)


async def main(old: str | None, calls: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Stub, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    call: Callable[[], Awaitable[Any]]
    if old:
        spec = importlib.util.spec_from_file_location("old_transport", old)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        client: Any = module.H1Transport()
        request: Any = module.RawRequest.to("POST", url, HEADERS, PAYLOAD)

        def call() -> Awaitable[Any]:
            return client.exchange(request, connect_timeout=10.0, read_timeout=100.0)
    else:
        client = AiohttpExchanger()
        request = RawRequest("POST", url, HEADERS, PAYLOAD)

        def call() -> Awaitable[Any]:
            return client.exchange(request, connect_timeout=10.0)

    async def one() -> None:
        async with asyncio.timeout(100):  # as TierClient does
            await call()

    for _ in range(200):  # warm the pool
        await one()

    async def worker() -> None:
        for _ in range(calls // 16):
            await one()

    started = time.process_time()
    await asyncio.gather(*[worker() for _ in range(16)])
    cpu = (time.process_time() - started) / (calls // 16 * 16)
    print(f"{'H1Transport' if old else 'AiohttpExchanger'}: {cpu * 1e3:.3f} ms CPU per call")
    await client.aclose()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old", help="path to the hand-written transport.py to compare")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    uvloop.run(main(args.old, args.calls))
