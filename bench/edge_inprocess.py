"""CPU per request of the whole app driven in-process through ASGI (no sockets, no server):
the edge's own cost, without the noise of a shared machine's scheduler.

    .venv/bin/python bench/edge_inprocess.py                 # the working tree
    .venv/bin/python bench/edge_inprocess.py --tree /tmp/old # another checkout (git archive)

The tier is an httpx ``MockTransport`` answering the benchmark's chat.completion
(``bench/gateway_bench/payloads.py``); each request is ``POST /v1/chat/completions`` with the
benchmark's body, sent one at a time. Prints CPU ms per request (process time / requests).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def run(requests: int) -> float:
    import httpx
    import payloads  # type: ignore[import-not-found]

    from gateway.app import create_app
    from gateway.settings import load_settings

    answer = payloads.chat_completion()

    def tier(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"{}" if request.url.path == "/health" else answer)

    env = {
        "GATEWAY_TIER_DEV_URL": "http://dev.test",
        "GATEWAY_TIER_DEV_KIND": "openai",
        "GATEWAY_LOCAL_TIER": "off",
    }
    app = create_app(load_settings(environ=env), transport=httpx.MockTransport(tier))
    body = payloads.chat_request()
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gateway"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    lifespan: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(message: Any) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await lifespan.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan"}, lifespan.get, lifespan_send))  # type: ignore[arg-type]
    await started.wait()

    async def one() -> None:
        statuses: list[int] = []
        done = asyncio.Event()
        pending = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> Any:
            if pending:
                return pending.pop()
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif not message.get("more_body"):
                done.set()

        await app(dict(scope), receive, send)  # type: ignore[arg-type]
        assert statuses == [200], statuses

    for _ in range(300):  # warm: caches, the schema verdict, the metric children
        await one()
    cpu = time.process_time()
    for _ in range(requests):
        await one()
    per_request = (time.process_time() - cpu) / requests * 1000
    await lifespan.put({"type": "lifespan.shutdown"})
    await task
    return per_request


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", type=Path, default=HERE.parent, help="the checkout to measure")
    p.add_argument("--requests", type=int, default=3000)
    args = p.parse_args()
    sys.path[:0] = [str(args.tree), str(HERE / "gateway_bench")]
    print(f"{asyncio.run(run(args.requests)):.3f} ms CPU per request ({args.tree})")


if __name__ == "__main__":
    main()
