"""A down tier comes back by itself: trials on a backoff (one probe for a tier whose probes
are free, one request for a scale-to-zero tier), one at a time, on a ManualClock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from gateway.clock import ManualClock
from gateway.warmth.loops import run_recovery
from gateway.warmth.store import MemoryStore, WarmthRecord
from gateway.warmth.tracker import WarmthTracker
from tests.unit.test_warmth import DEV, LOCAL, MONDAY_9_UTC, ScriptedProbe, finish

# A free-probe tier as TierWarmthConfig.for_tier makes an openai/local one: 5 s, doubling, 60 s.
FREE = msgspec.structs.replace(LOCAL, down_retry_after_s=5.0, down_retry_max_s=60.0)
MODAL = msgspec.structs.replace(DEV, down_retry_after_s=60.0, down_retry_max_s=900.0)
T0 = MONDAY_9_UTC.timestamp()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MONDAY_9_UTC)


@pytest.fixture
async def tracker(clock: ManualClock) -> AsyncIterator[WarmthTracker]:
    tracker = WarmthTracker({"free": FREE, "modal": MODAL}, MemoryStore(), clock)
    yield tracker
    await tracker.aclose()


def take_down(tracker: WarmthTracker, tier: str) -> None:
    for _ in range(3):
        tracker.record_failure(tier, f"tier {tier} could not be reached")


def test_the_backoff_doubles_from_the_first_wait_up_to_the_cap():
    assert [FREE.down_backoff_s(n) for n in range(6)] == [5, 10, 20, 40, 60, 60]
    assert [MODAL.down_backoff_s(n) for n in range(6)] == [60, 120, 240, 480, 900, 900]
    assert MODAL.down_backoff_s(10_000) == 900  # no float overflow after a long outage


async def test_a_down_tier_says_when_it_is_tried_next(tracker, clock):
    take_down(tracker, "modal")
    state = await tracker.state("modal")
    assert (state.state, state.next_trial_s, state.trial_running) == ("down", 60.0, False)
    await clock.advance(45)
    assert (await tracker.state("modal")).next_trial_s == 15.0
    status = (await tracker.snapshot())["modal"]
    assert status.down_since == "2026-11-23T09:00:00+00:00"
    assert status.next_trial == "2026-11-23T09:01:00+00:00"
    assert status.trials == 0


async def test_a_free_tier_is_probed_on_the_backoff_and_comes_back(tracker, clock):
    """Killed at 0 s, back at 50 s: probed at 5, 15, 35 (down), 75 s (healthy)."""
    take_down(tracker, "free")
    probe = ScriptedProbe(clock, [False, False, False, True])
    loop = asyncio.create_task(run_recovery(tracker, {"free": probe}, interval_s=1.0))
    try:
        for _ in range(80):
            await clock.advance(1)
            if (await tracker.state("free")).state == "warm":
                break
        assert probe.calls == [5.0, 15.0, 35.0, 75.0]
        status = (await tracker.snapshot())["free"]
        assert (status.state, status.trials, status.down_since) == ("warm", 0, None)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_a_failed_probe_trial_keeps_the_tier_down_since_it_went_down(tracker, clock):
    take_down(tracker, "free")
    await clock.advance(5)
    assert await tracker.trial_due("free")
    tracker.trigger_trial("free", ScriptedProbe(clock, [ConnectionRefusedError()]))
    await clock.advance(0)
    state = await tracker.state("free")
    assert (state.state, state.since, state.next_trial_s) == ("down", T0, 10.0)
    status = (await tracker.snapshot())["free"]
    assert status.trials == 1
    assert status.last_error == "trial probe: ConnectionRefusedError"


async def test_recovery_never_probes_a_scale_to_zero_tier(tracker, clock):
    take_down(tracker, "modal")
    probe = ScriptedProbe(clock, [True])
    loop = asyncio.create_task(run_recovery(tracker, {"modal": probe}, interval_s=1.0))
    await clock.advance(1000)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    assert probe.calls == []
    assert not await tracker.trial_due("modal")


async def test_one_request_is_a_scale_to_zero_tiers_trial_and_its_failure_doubles_the_wait(
    tracker, clock
):
    take_down(tracker, "modal")
    assert not await tracker.claim_trial("modal", 180)  # before the backoff ran out
    await clock.advance(60)
    assert (await tracker.state("modal")).next_trial_s == 0
    claims = [await tracker.claim_trial("modal", 180) for _ in range(5)]
    assert claims == [True, False, False, False, False]  # half-open: exactly one goes through
    running = await tracker.state("modal")
    assert (running.state, running.trial_running) == ("down", True)

    tracker.record_failure("modal", "tier modal could not be reached")
    again = await tracker.state("modal")
    assert (again.state, again.since, again.next_trial_s) == ("down", T0, 120.0)

    await clock.advance(120)
    assert await tracker.claim_trial("modal", 180)
    tracker.record_success("modal", 2.0)
    back = await tracker.state("modal")
    assert (back.state, back.failures, back.next_trial_s) == ("warm", 0, None)
    assert (await tracker.snapshot())["modal"].trials == 0


async def test_a_trial_whose_request_never_ends_lets_the_next_one_through_after_its_lease(
    tracker, clock
):
    take_down(tracker, "modal")
    await clock.advance(60)
    assert await tracker.claim_trial("modal", 30)  # then the client hangs up: no outcome
    assert not await tracker.claim_trial("modal", 30)
    await clock.advance(31)
    assert await tracker.claim_trial("modal", 30)


async def test_failures_of_requests_sent_before_the_tier_went_down_do_not_stretch_the_wait(
    tracker, clock
):
    take_down(tracker, "modal")
    for _ in range(16):  # in flight when it went down
        tracker.record_failure("modal", "tier modal could not be reached")
    state = await tracker.state("modal")
    assert (state.state, state.next_trial_s) == ("down", 60.0)


async def test_a_warm_up_after_the_backoff_is_the_trial_and_a_missed_deadline_waits_longer(
    tracker, clock
):
    take_down(tracker, "modal")
    await clock.advance(60)
    probe = ScriptedProbe(clock, [False])
    task = asyncio.create_task(tracker.warm_up("modal", probe))
    await clock.advance(1)
    assert (await tracker.state("modal")).state == "warming"
    assert not await tracker.claim_trial("modal", 180)  # the warm-up is the trial
    await finish(clock, task, step_s=15)
    state = task.result()
    assert (state.state, state.since) == ("down", T0)  # down since it first went down
    assert state.next_trial_s == 120.0  # its second trial waits twice as long


async def test_a_record_written_before_retry_at_existed_is_tried_after_the_first_wait(clock):
    old = WarmthRecord(state="down", since=T0 - 50, failures=3)  # as an older gateway stored it
    tracker = WarmthTracker({"modal": MODAL}, MemoryStore({"modal": old}), clock)
    assert (await tracker.state("modal")).next_trial_s == 10.0
    await tracker.aclose()


async def test_a_trial_ended_with_no_verdict_lets_the_next_request_try_at_once(tracker, clock):
    """The trial request was refused 400 for its own fault, or its client hung up."""
    take_down(tracker, "modal")
    await clock.advance(60)
    assert await tracker.claim_trial("modal", 180)
    tracker.end_trial("modal")
    state = await tracker.state("modal")
    assert (state.state, state.next_trial_s, state.trial_running) == ("down", 0.0, False)
    await clock.advance(0)  # the write behind lands
    assert (await tracker.snapshot())["modal"].trials == 0  # it did not count
    assert await tracker.claim_trial("modal", 180)


async def test_a_probe_trial_cut_short_by_shutdown_leaves_the_next_trial_due(clock):
    store = MemoryStore()
    tracker = WarmthTracker({"free": FREE}, store, clock)
    take_down(tracker, "free")
    await clock.advance(5)
    tracker.trigger_trial("free", ScriptedProbe(clock, [True], takes_s=30))
    await clock.advance(1)
    await tracker.aclose()
    record = await store.load("free")
    assert record is not None
    assert (record.state, record.lease_owner, record.retry_at) == ("down", None, T0 + 6)
