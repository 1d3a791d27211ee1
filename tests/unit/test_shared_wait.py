"""Requests held for a cold tier share one wait per worker: a thousand held requests cost
one state check per poll, not a thousand (each a wake-up of the event loop), and all of
them are released once it is warm."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gateway.clock import ManualClock
from gateway.routing.warmth_service import WarmthService
from gateway.settings import load_settings
from gateway.warmth.store import MemoryStore
from gateway.warmth.tracker import WarmthTracker
from gateway.warmth.types import TierWarmthConfig, WarmthView


class CountingTracker(WarmthTracker):
    checks = 0

    async def state(self, tier: str, *, max_age_s: float | None = None) -> WarmthView:
        self.checks += 1
        return await super().state(tier, max_age_s=max_age_s)


async def never_healthy() -> bool:
    return False


async def test_a_thousand_waiters_share_one_poll_and_are_all_released() -> None:
    settings = load_settings(
        environ={"GATEWAY_LOCAL_TIER": "off", "GATEWAY_TIER_PROD_URL": "https://prod.test"}
    )
    clock = ManualClock(datetime(2026, 11, 30, 9, tzinfo=UTC))
    store = MemoryStore()
    configs = {"prod": TierWarmthConfig.for_tier(settings.tiers["prod"])}
    tracker = CountingTracker(configs, store, clock)
    states = WarmthService(settings, tracker, store, {"prod": never_healthy})
    try:
        waiters = [asyncio.create_task(states.wait_warm("prod", 30.0)) for _ in range(1000)]
        for _ in range(10):
            await clock.advance(1.0)
        assert not any(w.done() for w in waiters)
        assert tracker.checks <= 20  # one poller: about one check a second, not 1000 a second

        tracker.record_success("prod", latency_s=0.5)
        await clock.advance(1.0)
        assert await asyncio.gather(*waiters) == [True] * 1000

        late = asyncio.create_task(states.wait_warm("prod", 5.0))
        await clock.advance(0.0)
        assert await late is True
    finally:
        await states.aclose()


async def test_each_waiter_keeps_its_own_deadline() -> None:
    settings = load_settings(
        environ={"GATEWAY_LOCAL_TIER": "off", "GATEWAY_TIER_PROD_URL": "https://prod.test"}
    )
    clock = ManualClock(datetime(2026, 11, 30, 9, tzinfo=UTC))
    store = MemoryStore()
    tracker = WarmthTracker(
        {"prod": TierWarmthConfig.for_tier(settings.tiers["prod"])}, store, clock
    )
    states = WarmthService(settings, tracker, store, {"prod": never_healthy})
    try:
        short = asyncio.create_task(states.wait_warm("prod", 2.0))
        long = asyncio.create_task(states.wait_warm("prod", 90.0))  # outlives SHARED_WAIT_S
        await clock.advance(3.0)
        assert short.done() and short.result() is False
        assert not long.done()
        for _ in range(70):
            await clock.advance(1.0)
        assert not long.done()  # past the first shared wait's 60 s: a new one took over
        tracker.record_success("prod", latency_s=0.5)
        await clock.advance(1.0)
        assert await long is True
    finally:
        await states.aclose()
