"""A stand-in tier that cold-starts, as a Modal endpoint does: the first request of any kind
starts its boot; until the boot ends (``--cold-s``) every request is held, then answered
(``GET /health`` 200, ``POST /v1/chat/completions`` a vLLM-shaped completion). ``GET
/stats`` reports what it saw without starting anything. Used by the replica test and by
bench/hold_10k.py, as a process of its own on loopback::

    python bench/cold_tier.py --port 9100 --cold-s 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web

ANSWER = '{"name": "Ada", "age": 36}'
BACKLOG = 16_384  # the 10k bench's gateway opens thousands of connections at once


class ColdTier:
    def __init__(self, cold_s: float) -> None:
        self.cold_s = cold_s
        self.booted = asyncio.Event()
        self.boot_started: float | None = None
        self.health_calls = 0
        self.completions = 0
        self.held = 0
        self.max_held = 0

    def _touch(self) -> None:
        if self.boot_started is None:
            self.boot_started = time.time()
            asyncio.get_running_loop().call_later(self.cold_s, self.booted.set)

    async def _hold(self) -> None:
        self._touch()
        self.held += 1
        self.max_held = max(self.max_held, self.held)
        try:
            await self.booted.wait()
        finally:
            self.held -= 1

    async def health(self, request: web.Request) -> web.Response:
        self.health_calls += 1
        await self._hold()
        return web.json_response({})

    async def chat(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        self.completions += 1
        await self._hold()
        return web.json_response(
            {
                "id": f"chatcmpl-{self.completions}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "stand-in"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "health_calls": self.health_calls,
                "completions": self.completions,
                "boot_started": self.boot_started,
                "booted": self.booted.is_set(),
                "max_held": self.max_held,
            }
        )


async def main(port: int, cold_s: float) -> None:
    tier = ColdTier(cold_s)
    app = web.Application()
    app.router.add_get("/health", tier.health)
    app.router.add_post("/v1/chat/completions", tier.chat)
    app.router.add_get("/stats", tier.stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=BACKLOG).start()
    print(json.dumps({"listening": port, "cold_s": cold_s}), flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cold-s", type=float, default=6.0)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.cold_s))
