"""What API keys and limits cost inside the app: ``create_app`` with keys off and with keys on,
``POST /v1/chat/completions`` called as ASGI (no sockets, the tier an in-process transport),
16 requests in flight, CPU time per request, interleaved rounds.

Run: PYTHONPATH=$PWD .venv/bin/python bench/auth_in_app.py [--rounds 7] [--limits-store URL]

Quieter than the end-to-end run (bench/auth_overhead.py: no server, no wrk, no nginx sharing
the two cores), and unlike the hot loop (bench/auth_hot_path.py) the gate runs among
everything else a request does. Needs the completion routes to be Litestar handlers (the
`edge` work): on the completion lane no middleware runs and every case costs the same.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar

from gateway.access.keys import KeyRecord, add_key, hash_key, new_key
from gateway.app import create_app
from gateway.settings import load_settings

C = 16
HUGE = 10**9  # limits that are counted but never reached
BODY = b'{"model": "dev", "messages": [{"role": "user", "content": "hi"}]}'
ANSWER = (
    b'{"id": "x", "object": "chat.completion", "created": 1, "model": "dev", "choices": '
    b'[{"index": 0, "message": {"role": "assistant", "content": "hello"}, '
    b'"finish_reason": "stop"}], "usage": {"prompt_tokens": 12, "completion_tokens": 9, '
    b'"total_tokens": 21}}'
)
ENV = {
    "GATEWAY_TIER_DEV_URL": "http://dev.tier.test",
    "GATEWAY_TIER_DEV_KIND": "openai",
    "GATEWAY_LOCAL_TIER": "off",
}


def tier(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=ANSWER, headers={"content-type": "application/json"})


@asynccontextmanager
async def running(app: Litestar) -> AsyncIterator[Litestar]:
    async with AsyncExitStack() as stack:
        for lifespan in app._lifespan_managers:  # what the ASGI server's lifespan runs
            await stack.enter_async_context(lifespan(app))  # type: ignore[operator]
        yield app


async def cpu_us_per_request(app: Litestar, key: str | None, n: int) -> float:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    if key is not None:
        headers.append((b"authorization", b"Bearer " + key.encode()))

    async def one() -> None:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        received = False

        async def receive() -> Any:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": BODY, "more_body": False}
            await asyncio.Event().wait()  # no disconnect: the client stays

        status: list[int] = []

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)  # type: ignore[arg-type]
        assert status == [200], status

    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            await one()

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(C)))
    return (time.process_time() - started) / n * 1e6


async def main(rounds: int, n: int, limits_store: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keys.json"
        keys: dict[str, str | None] = {"keys off": None}
        for name, limits in [
            ("key, no limits", {}),
            ("key, rpm", {"rpm": HUGE}),
            ("key, rpm+tpm+gpu", {"rpm": HUGE, "tpm": HUGE, "gpu_seconds_per_day": HUGE}),
        ]:
            keys[name] = key = new_key()
            add_key(path, KeyRecord(name=name, hash=hash_key(key), tiers=("dev",), **limits))
        transport = httpx.MockTransport(tier)
        off = create_app(load_settings(environ=ENV), transport=transport)
        keyed = {**ENV, "GATEWAY_KEYS_FILE": str(path)}
        if limits_store is not None:  # the counts in Redis: the gateway's CPU only is measured
            keyed["GATEWAY_LIMITS_STORE"] = limits_store
        on = create_app(load_settings(environ=keyed), transport=transport)
        results: dict[str, list[float]] = {name: [] for name in keys}
        async with running(off), running(on):
            for key in keys.values():  # warm
                await cpu_us_per_request(off if key is None else on, key, 500)
            # A full collection of the apps' heap (~85,000 objects) takes 20-50 ms here: one
            # landing in a run of 2,000 requests adds 10-25 µs to each, to whichever case it
            # falls in. Frozen, the heap of the started apps is not walked again, and the
            # collections left are the ones each run's own allocations cause.
            gc.collect()
            gc.freeze()
            for _ in range(rounds):
                for name, key in keys.items():
                    app = off if key is None else on
                    results[name].append(await cpu_us_per_request(app, key, n))
    base = statistics.median(results["keys off"])
    for name, runs in results.items():
        median = statistics.median(runs)
        each = ", ".join(f"{r:.0f}" for r in runs)
        print(f"{name:18s} {median:6.1f} µs CPU/request  +{median - base:5.1f}  [{each}]")
    # The runs of one round are next to each other in time, so what else loads the machine
    # moves them together: each round's own difference from keys off is the steadier figure.
    print("gate cost per round (the case minus keys off in the same round):")
    for name, runs in list(results.items())[1:]:
        deltas = sorted(r - b for r, b in zip(runs, results["keys off"], strict=True))
        quartiles = statistics.quantiles(deltas, n=4) if len(deltas) > 1 else deltas * 3
        each = ", ".join(f"{d:.0f}" for d in deltas)
        print(
            f"{name:18s} median {statistics.median(deltas):5.1f} µs  "
            f"IQR {quartiles[0]:5.1f}..{quartiles[2]:5.1f}  [{each}]"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000, help="per run")
    parser.add_argument("--limits-store", help="e.g. redis://127.0.0.1:6390/0 (default: memory)")
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests, args.limits_store))
