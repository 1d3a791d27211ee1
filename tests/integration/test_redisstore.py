"""The Redis warmth store against a real redis-server: the store protocol, atomic updates
under contention, namespaces, one warm-up between trackers on separate connections, and
an outage (down, or frozen) answered from local state, then rejoined."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import msgspec
import pytest

from gateway.clock import ManualClock
from gateway.warmth.redis_store import RedisStore
from gateway.warmth.store import WarmthRecord, failed
from gateway.warmth.tracker import WarmthTracker
from gateway.warmth.types import TierWarmthConfig
from tests.redis_server import RedisServer

PROD = TierWarmthConfig(
    kind="modal",
    scales_to_zero=True,
    scaledown_window_s=900,
    expected_cold_start_s=424,
    startup_timeout_s=30,
)


def one_more_failure(old: WarmthRecord | None) -> WarmthRecord:
    base = old or WarmthRecord(state="cold", since=1.0)
    return msgspec.structs.replace(base, failures=base.failures + 1)


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_server.url, prefix="team-a")
    yield store
    await store.aclose()


async def test_update_sees_the_previous_record_and_load_all_finds_it(store: RedisStore) -> None:
    assert await store.load("prod") is None
    assert await store.load_all() == {}
    await store.update("prod", one_more_failure)
    second = await store.update("prod", one_more_failure)
    assert second == WarmthRecord(state="cold", since=1.0, failures=2)
    assert await store.load("prod") == second
    assert await store.load_all() == {"prod": second}
    assert store.health().status == "ok"


async def test_a_failing_change_leaves_the_record_as_it_was(store: RedisStore) -> None:
    record = await store.update("dev", lambda _: WarmthRecord(state="warm", since=5.0))

    def broken(old: WarmthRecord | None) -> WarmthRecord:
        raise RuntimeError("bug in a change")

    with pytest.raises(RuntimeError):
        await store.update("dev", broken)
    assert await store.load("dev") == record


async def test_concurrent_updates_from_separate_connections_lose_nothing(
    redis_server: RedisServer,
) -> None:
    # Three replicas' stores, each with its own connections, racing on one key: WATCH/MULTI
    # makes every read-change-write whole, so no increment is lost.
    stores = [RedisStore(redis_server.url, prefix="team-a", timeout_s=5.0) for _ in range(3)]
    try:
        await asyncio.gather(
            *(s.update("prod", one_more_failure) for s in stores for _ in range(40))
        )
        record = await stores[0].load("prod")
        assert record is not None and record.failures == 120
    finally:
        for s in stores:
            await s.aclose()


async def test_prefixes_keep_deployments_apart(redis_server: RedisServer) -> None:
    a = RedisStore(redis_server.url, prefix="team-a")
    b = RedisStore(redis_server.url, prefix="team-b")
    try:
        await a.update("prod", lambda _: WarmthRecord(state="warm", since=1.0))
        assert await b.load("prod") is None
        assert await b.load_all() == {}
        assert a.key("prod") == "team-a:tier:prod"
    finally:
        await a.aclose()
        await b.aclose()


async def test_trackers_on_separate_connections_run_one_warm_up(
    redis_server: RedisServer,
) -> None:
    probes: list[str] = []
    stores = [RedisStore(redis_server.url, prefix="team-a") for _ in range(3)]
    trackers = [
        WarmthTracker({"prod": PROD}, s, poll_interval_s=0.05, owner=f"replica-{i}")
        for i, s in enumerate(stores)
    ]

    def probe_of(owner: str) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            probes.append(owner)
            await asyncio.sleep(0.3)  # the held request of a booting tier
            return True

        return probe

    try:
        states = await asyncio.gather(*(t.warm_up("prod", probe_of(t.owner)) for t in trackers))
        assert len(probes) == 1
        assert [s.state for s in states] == ["warm"] * 3
        for t in trackers:
            assert (await t.state("prod", max_age_s=0)).state == "warm"
    finally:
        for t in trackers:
            await t.aclose()
        for s in stores:
            await s.aclose()


async def test_redis_down_is_answered_locally_counted_and_rejoined(
    redis_server: RedisServer,
) -> None:
    clock = ManualClock(datetime(2026, 11, 30, 12, tzinfo=UTC))
    errors: list[int] = []
    store = RedisStore(
        redis_server.url, prefix="team-a", clock=clock, on_error=lambda: errors.append(1)
    )
    try:
        shared = await store.update("prod", lambda _: WarmthRecord(state="warm", since=1.0))
        redis_server.stop()

        assert await store.load("prod") == shared  # the last record it knew
        local = await store.update("prod", one_more_failure)  # changed locally
        assert local.failures == 1
        assert store.health().status == "degraded"
        assert store.health().last_error is not None
        assert errors == [1]  # within rejoin_after_s, Redis is not asked again
        assert await store.load_all() == {"prod": local}
        assert errors == [1]

        redis_server.start()  # an empty Redis, on the same port
        assert await store.load("prod") == local  # still too soon to try Redis again
        await clock.advance(1.0)
        assert await store.load("prod") is None  # rejoined: Redis's truth, which is empty
        assert store.health().status == "ok"
        assert store.health().errors == 1
    finally:
        await store.aclose()


async def test_a_frozen_redis_costs_one_short_timeout_then_local_answers(
    redis_server: RedisServer,
) -> None:
    # 1 s, not the 0.25 s default: the first write must not time out on a loaded CI machine
    store = RedisStore(redis_server.url, prefix="team-a", timeout_s=1.0, rejoin_after_s=0.5)
    try:
        await store.update("prod", lambda _: WarmthRecord(state="cold", since=1.0))
        redis_server.pause()  # connections stay open; nothing answers
        loop = asyncio.get_running_loop()
        started = loop.time()
        record = await store.update("prod", one_more_failure)
        again = await store.update("prod", one_more_failure)  # local at once, no timeout
        # Bounded: without the timeout a frozen Redis holds the call for ever (the bound is
        # loose: only a hang fails it). The second call did not wait at all: one error.
        assert loop.time() - started < 5.0
        assert (record.failures, again.failures) == (1, 2)
        assert store.health().status == "degraded"
        assert store.health().errors == 1
        redis_server.resume()
        await asyncio.sleep(1.0)  # past rejoin_after_s (0.5 s), on the real clock
        assert await store.load("prod") == WarmthRecord(state="cold", since=1.0)
        assert store.health().status == "ok"
    finally:
        await store.aclose()


async def test_replicas_on_separate_connections_let_one_trial_of_a_down_tier_through(
    redis_server: RedisServer,
) -> None:
    """The half-open state across machines: one request among all replicas is the trial."""
    clock = ManualClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    config = msgspec.structs.replace(PROD, down_retry_after_s=60.0)
    stores = [RedisStore(redis_server.url, prefix="team-a") for _ in range(3)]
    trackers = [
        WarmthTracker({"prod": config}, s, clock, owner=f"replica-{i}")
        for i, s in enumerate(stores)
    ]
    try:
        for _ in range(3):
            await stores[0].update("prod", failed(config, clock.time(), "refused"))
        await clock.advance(60)
        claims = [t.claim_trial("prod", 180) for t in trackers for _ in range(3)]
        wins = await asyncio.gather(*claims)
        assert wins.count(True) == 1
        record = await stores[0].load("prod")
        assert record is not None and (record.state, record.trials) == ("down", 1)
    finally:
        for t in trackers:
            await t.aclose()
        for s in stores:
            await s.aclose()
