"""What warmth costs a request: the tracker on the SQLite store, one worker.

Run: PYTHONPATH=$PWD python bench/warmth_hot_path.py
Prints µs per call, the median of 5 runs (each run's figure in brackets).
"""

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.warmth.store import SqliteStore, WarmthRecord
from gateway.warmth.tracker import WarmthTracker
from gateway.warmth.types import TierWarmthConfig

PROD = TierWarmthConfig(
    kind="modal",
    scales_to_zero=True,
    scaledown_window_s=900,
    expected_cold_start_s=424,
    startup_timeout_s=900,
)


async def per_call_us(calls: int, fn: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - started) / calls * 1e6


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "warmth.db")
        tracker = WarmthTracker({"prod": PROD}, store)
        tracker.record_success("prod", 1.0)
        while await store.load("prod") is None:  # noqa: ASYNC110  # polls a store, not an event
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)

        async def success() -> None:
            tracker.record_success("prod", 1.0)

        def warm(_: WarmthRecord | None) -> WarmthRecord:
            return WarmthRecord(state="warm", since=time.time(), last_success=time.time())

        cases = [
            ("state(), from the cache", lambda: tracker.state("prod"), 20_000),
            ("state(), reading the store", lambda: tracker.state("prod", max_age_s=0), 2_000),
            ("record_success(), warm tier", success, 20_000),
            ("store.update() (a write)", lambda: store.update("prod", warm), 1_000),
        ]
        for name, fn, calls in cases:
            runs = [await per_call_us(calls, fn) for _ in range(5)]
            each = ", ".join(f"{r:.1f}" for r in runs)
            print(f"{name:32s} {statistics.median(runs):8.1f} µs/call  [{each}]")
        await tracker.aclose()
        await store.aclose()


asyncio.run(main())
