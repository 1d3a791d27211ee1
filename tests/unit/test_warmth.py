"""The warmth state machine, its ETA and single-flight warm-ups, on a ManualClock: no test
here sleeps for real. Cross-process behaviour on SQLite is in test_warmstore.py."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

import gateway
from gateway.clock import ManualClock
from gateway.errors import TierUnavailable
from gateway.settings import Tier, load_settings
from gateway.warmth.schedule import parse_schedule
from gateway.warmth.store import MemoryStore, WarmthRecord
from gateway.warmth.tracker import WarmthTracker
from gateway.warmth.types import TierWarmthConfig

REPO = Path(gateway.__file__).resolve().parent.parent
MONDAY_9_UTC = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

DEV = TierWarmthConfig(
    kind="modal",
    scales_to_zero=True,
    scaledown_window_s=300,
    expected_cold_start_s=60,
    startup_timeout_s=600,
)
PROD = TierWarmthConfig(
    kind="modal",
    scales_to_zero=True,
    scaledown_window_s=900,
    expected_cold_start_s=424,
    startup_timeout_s=900,
)
LOCAL = TierWarmthConfig(
    kind="local",
    scales_to_zero=False,
    scaledown_window_s=300,
    expected_cold_start_s=20,
    startup_timeout_s=120,
)


class ScriptedProbe:
    """A tier's /health as seen over time: each call takes ``takes_s`` of clock time, then
    gives the next scripted answer (True = healthy, False = 503, an exception = no answer)."""

    def __init__(
        self, clock: ManualClock, answers: list[bool | Exception], *, takes_s: float = 0.0
    ) -> None:
        self.clock = clock
        self.answers = list(answers)
        self.takes_s = takes_s
        self.calls: list[float] = []

    async def __call__(self) -> bool:
        self.calls.append(self.clock.monotonic())
        if self.takes_s:
            await self.clock.sleep(self.takes_s)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class CountingStore(MemoryStore):
    """A real MemoryStore that also counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.updates = 0

    async def update(
        self, tier: str, change: Callable[[WarmthRecord | None], WarmthRecord]
    ) -> WarmthRecord:
        self.updates += 1
        return await super().update(tier, change)


class BrokenStore:
    """A store whose disk is gone: every call fails."""

    async def load(self, tier: str) -> WarmthRecord | None:
        raise OSError("disk I/O error")

    async def load_all(self) -> dict[str, WarmthRecord]:
        raise OSError("disk I/O error")

    async def update(
        self, tier: str, change: Callable[[WarmthRecord | None], WarmthRecord]
    ) -> WarmthRecord:
        raise OSError("disk I/O error")

    async def aclose(self) -> None:
        return None


class CancelLosingStore(MemoryStore):
    """A MemoryStore whose writes can be held in flight (``hold``); a cancel that lands on a
    held write is lost and the write completes when released, as redis-py's does on Python
    3.11: it sends inside ``asyncio.wait_for``, which returns the sent result instead of
    raising when the cancel lands in the step the send finished in."""

    def __init__(self) -> None:
        super().__init__()
        self.held: asyncio.Event | None = None

    def hold(self) -> None:
        self.held = asyncio.Event()

    def release(self) -> None:
        assert self.held is not None
        self.held.set()
        self.held = None

    async def update(
        self, tier: str, change: Callable[[WarmthRecord | None], WarmthRecord]
    ) -> WarmthRecord:
        if self.held is not None:
            held = self.held
            while not held.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await held.wait()
        return await super().update(tier, change)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MONDAY_9_UTC)


@pytest.fixture
async def tracker(clock: ManualClock) -> AsyncIterator[WarmthTracker]:
    tracker = WarmthTracker({"dev": DEV, "prod": PROD, "local": LOCAL}, MemoryStore(), clock)
    yield tracker
    await tracker.aclose()


async def finish(clock: ManualClock, task: asyncio.Task[object], step_s: float = 1.0) -> None:
    for _ in range(100_000):
        if task.done():
            return
        await clock.advance(step_s)
    raise AssertionError("task never finished")


# -- states --------------------------------------------------------------------------------


async def test_scale_to_zero_tier_starts_presumed_cold_with_the_configured_eta(tracker):
    prod = await tracker.state("prod")
    assert (prod.state, prod.eta_s, prod.since) == ("cold", 424.0, MONDAY_9_UTC.timestamp())
    assert (await tracker.state("dev")).eta_s == 60.0


async def test_local_tier_starts_unknown_with_no_eta(tracker):
    local = await tracker.state("local")
    assert (local.state, local.eta_s) == ("unknown", None)


async def test_scale_to_zero_tier_inside_keep_warm_window_starts_unknown(clock):
    always = msgspec.structs.replace(PROD, keep_warm=parse_schedule("always"))
    tracker = WarmthTracker({"prod": always}, MemoryStore(), clock)
    assert (await tracker.state("prod")).state == "unknown"


async def test_success_makes_warm_and_scale_down_window_makes_presumed_cold(tracker, clock):
    await clock.advance(10)
    tracker.record_success("dev", latency_s=1.5)
    warm = await tracker.state("dev")
    assert (warm.state, warm.since, warm.eta_s) == ("warm", clock.time(), 0.0)
    success_at = clock.time()

    await clock.advance(299)
    assert (await tracker.state("dev")).state == "warm"
    await clock.advance(2)
    cold = await tracker.state("dev")
    assert (cold.state, cold.since, cold.eta_s) == ("cold", success_at + 300, 60.0)


async def test_success_on_a_warm_tier_keeps_its_since(tracker, clock):
    tracker.record_success("dev", 1.0)
    since = (await tracker.state("dev")).since
    await clock.advance(100)
    tracker.record_success("dev", 1.0)
    assert (await tracker.state("dev")).since == since


async def test_local_tier_is_never_presumed_cold(tracker, clock):
    tracker.record_success("local", 0.2)
    await clock.advance(10_000)
    assert (await tracker.state("local")).state == "warm"


async def test_repeated_failures_make_down_and_a_success_recovers(tracker, clock):
    tracker.record_success("dev", 1.0)
    tracker.record_failure("dev", "dev did not answer in 120 s")
    tracker.record_failure("dev", "dev did not answer in 120 s")
    assert (await tracker.state("dev")).state == "warm"  # two could be noise
    await clock.advance(5)
    tracker.record_failure("dev", "dev answered 500")
    down = await tracker.state("dev")
    assert (down.state, down.since, down.eta_s, down.failures) == ("down", clock.time(), None, 3)

    tracker.record_success("dev", 1.0)
    back = await tracker.state("dev")
    assert (back.state, back.failures) == ("warm", 0)
    assert (await tracker.snapshot())["dev"].last_error == "dev answered 500"


async def test_a_success_between_failures_resets_the_count(tracker):
    for _ in range(2):
        tracker.record_failure("local", "refused")
    tracker.record_success("local", 0.1)
    for _ in range(2):
        tracker.record_failure("local", "refused")
    assert (await tracker.state("local")).state == "warm"


def longest_streak(answers: list[bool]) -> int:
    longest = streak = 0
    for ok in answers:
        streak = 0 if ok else streak + 1
        longest = max(longest, streak)
    return longest


async def test_random_faults_between_successes_never_mark_a_working_tier_down(clock):
    # bench/results/fault-soak.md: at c=16, a tier failing 10 % of answers at random strung
    # three failures together about once a minute and flapped down. Two workers share the
    # store, as the answers of concurrent requests interleave across them.
    store = MemoryStore()
    workers = [WarmthTracker({"local": LOCAL}, store, clock) for _ in range(2)]
    faults = random.Random(20261130)  # seeded: the same answers on every run
    answers = [faults.random() >= 0.1 for _ in range(5_000)]
    assert longest_streak(answers) >= LOCAL.failures_to_down  # the old rule went down here
    states = set()
    for n, ok in enumerate(answers):
        worker = workers[n % 2]
        if ok:
            worker.record_success("local", 0.05)
        else:
            worker.record_failure("local", "local answered 500")
        await clock.advance(0.01)  # ~100 answers a second
        states.add((await worker.state("local")).state)
    assert states == {"warm"}
    assert (await store.load("local")).state == "warm"
    for worker in workers:
        await worker.aclose()


async def test_a_tier_dead_since_its_last_answer_goes_down_at_the_third_failure(tracker, clock):
    tracker.record_success("local", 0.1)
    await clock.advance(LOCAL.down_after_silence_s)  # then every call fails
    for n in range(1, 4):
        assert (await tracker.state("local")).state == "warm", n
        tracker.record_failure("local", "tier local could not be reached")
    down = await tracker.state("local")
    assert (down.state, down.failures) == ("down", 3)


async def test_an_outage_right_after_a_success_goes_down_once_the_tier_is_silent(tracker, clock):
    tracker.record_success("local", 0.1)
    for _ in range(16):  # every call now fails, and fast
        await clock.advance(0.1)
        tracker.record_failure("local", "tier local could not be reached")
    assert (await tracker.state("local")).state == "warm"  # it answered 1.6 s ago
    await clock.advance(LOCAL.down_after_silence_s - 1.6)
    tracker.record_failure("local", "tier local could not be reached")
    assert (await tracker.state("local")).state == "down"


async def test_a_success_not_yet_written_still_keeps_the_tier_up(clock):
    # Successes on a warm tier are written at most every success_write_interval_s: the
    # failure's write must not read the stored, older last success as silence.
    store = MemoryStore()
    tracker = WarmthTracker({"local": LOCAL}, store, clock)
    for _ in range(14):
        tracker.record_success("local", 0.1)
        await clock.advance(1)
    assert (await store.load("local")).last_success == clock.time() - 14  # the rest unwritten
    for _ in range(3):
        tracker.record_failure("local", "local answered 500")
    await clock.advance(0)
    assert (await store.load("local")).state == "warm"
    assert (await tracker.state("local", max_age_s=0)).state == "warm"
    await tracker.aclose()


async def test_failures_while_warming_leave_the_verdict_to_the_warm_up(tracker, clock):
    probe = ScriptedProbe(clock, [False])
    tracker.trigger_warm_up("dev", probe)
    await clock.advance(1)
    for _ in range(5):
        tracker.record_failure("dev", "held request timed out")
    assert (await tracker.state("dev")).state == "warming"


# -- warm-up and ETA ---------------------------------------------------------------------


async def test_warm_up_goes_cold_warming_warm_with_bounded_backoff(tracker, clock):
    probe = ScriptedProbe(clock, [False, False, False, False, False, False, True])
    task = asyncio.create_task(tracker.warm_up("dev", probe))
    await clock.advance(0)
    assert (await tracker.state("dev")).state == "warming"
    await finish(clock, task)
    assert task.result().state == "warm"
    # backoff 1, 2, 4, 8, 15 (capped), 15 s between probes
    assert probe.calls == [0, 1, 3, 7, 15, 30, 45]


async def test_eta_counts_down_while_warming_and_is_floored(tracker, clock):
    probe = ScriptedProbe(clock, [True], takes_s=70)  # a Modal boot holds the probe
    task = asyncio.create_task(tracker.warm_up("dev", probe))
    await clock.advance(20)
    assert (await tracker.state("dev")).eta_s == pytest.approx(40.0)
    await clock.advance(39.5)
    assert (await tracker.state("dev")).eta_s == 1.0  # 0.5 left, floored
    await clock.advance(5)
    assert (await tracker.state("dev")).eta_s == 1.0  # overdue: still "any moment"
    await finish(clock, task)
    assert (await tracker.state("dev")).eta_s == 0.0


async def test_eta_learns_cold_start_as_an_exponentially_weighted_mean(tracker, clock):
    for expected_mean in (0.3 * 100 + 0.7 * 60, 0.3 * 100 + 0.7 * (0.3 * 100 + 0.7 * 60)):
        task = asyncio.create_task(
            tracker.warm_up("dev", ScriptedProbe(clock, [True], takes_s=100))
        )
        await finish(clock, task)
        await clock.advance(301)  # scaled to zero again
        cold = await tracker.state("dev")
        assert cold.state == "cold"
        assert cold.eta_s == pytest.approx(expected_mean)
    status = (await tracker.snapshot())["dev"]
    assert status.warmups == 2
    assert status.mean_cold_start_s == pytest.approx(80.4)


async def test_a_fast_healthy_answer_is_not_learned_as_a_cold_start(tracker, clock):
    task = asyncio.create_task(tracker.warm_up("dev", ScriptedProbe(clock, [True], takes_s=0.3)))
    await finish(clock, task, step_s=0.1)
    status = (await tracker.snapshot())["dev"]
    assert (status.state, status.warmups, status.mean_cold_start_s) == ("warm", 0, 60.0)


async def test_hundred_concurrent_triggers_run_one_probe_sequence(tracker, clock):
    probe = ScriptedProbe(clock, [False, False, True])
    waiters = [asyncio.create_task(tracker.warm_up("prod", probe)) for _ in range(50)]
    for _ in range(50):
        tracker.trigger_warm_up("prod", probe)
    await finish(clock, waiters[0])
    await asyncio.gather(*waiters)
    assert len(probe.calls) == 3
    assert {w.result().state for w in waiters} == {"warm"}


async def test_two_workers_on_one_store_share_one_warm_up(clock):
    store = MemoryStore()
    one = WarmthTracker({"prod": PROD}, store, clock, owner="one")
    two = WarmthTracker({"prod": PROD}, store, clock, owner="two")
    probe_one = ScriptedProbe(clock, [True], takes_s=400)
    probe_two = ScriptedProbe(clock, [True], takes_s=400)
    first = asyncio.create_task(one.warm_up("prod", probe_one))
    await clock.advance(0)
    second = asyncio.create_task(two.warm_up("prod", probe_two))
    await clock.advance(10)
    assert (await two.state("prod")).state == "warming"  # worker two sees worker one's warm-up
    await finish(clock, first)
    await finish(clock, second)
    assert (len(probe_one.calls), len(probe_two.calls)) == (1, 0)
    assert second.result().state == "warm"
    await one.aclose()
    await two.aclose()


async def test_deadline_marks_down_without_leaking_the_error_text(tracker, clock):
    secret_url = httpx.ConnectError("connect to https://user:s3cret@dev.modal.run failed")
    probe = ScriptedProbe(clock, [secret_url])
    task = asyncio.create_task(tracker.warm_up("dev", probe))
    await finish(clock, task, step_s=15)
    assert task.result().state == "down"
    error = (await tracker.snapshot())["dev"].last_error
    assert error is not None
    assert "600 s startup timeout" in error
    assert "ConnectError" in error
    assert "s3cret" not in error


async def test_gateway_errors_from_a_probe_keep_their_detail(tracker, clock):
    probe = ScriptedProbe(clock, [TierUnavailable("dev answered 503: engine starting")])
    task = asyncio.create_task(tracker.warm_up("local", probe))
    await finish(clock, task, step_s=15)
    assert "dev answered 503: engine starting" in (
        (await tracker.snapshot())["local"].last_error or ""
    )


async def test_a_down_tier_is_warmed_again_only_after_the_retry_interval(tracker, clock):
    for _ in range(3):
        tracker.record_failure("dev", "refused")
    probe = ScriptedProbe(clock, [True])
    assert (await tracker.warm_up("dev", probe)).state == "down"
    assert probe.calls == []
    await clock.advance(60)
    task = asyncio.create_task(tracker.warm_up("dev", probe))
    await finish(clock, task)
    assert task.result().state == "warm"
    assert len(probe.calls) == 1


async def test_a_touch_on_a_warm_tier_keeps_it_warm_and_learns_nothing(tracker, clock):
    tracker.record_success("prod", 3.0)
    since = (await tracker.state("prod")).since
    await clock.advance(700)
    probe = ScriptedProbe(clock, [True], takes_s=0.05)
    touched_at = clock.time() + 0.05
    task = asyncio.create_task(tracker.warm_up("prod", probe))
    await clock.advance(0.01)
    assert (await tracker.state("prod")).state == "warm"
    await finish(clock, task, step_s=0.05)
    after = await tracker.state("prod")
    assert (after.state, after.since) == ("warm", since)
    assert after.last_success == pytest.approx(touched_at)
    assert (await tracker.snapshot())["prod"].warmups == 0


async def test_a_touch_held_past_a_quick_answer_shows_the_tier_warming(tracker, clock):
    # The container went away under us: Modal holds the touch for a whole boot.
    tracker.record_success("prod", 3.0)
    await clock.advance(700)
    task = asyncio.create_task(tracker.warm_up("prod", ScriptedProbe(clock, [True], takes_s=430)))
    await clock.advance(4)
    assert (await tracker.state("prod")).state == "warm"
    await clock.advance(2)
    warming = await tracker.state("prod")
    assert (warming.state, warming.eta_s) == ("warming", pytest.approx(424 - 6))
    await finish(clock, task)
    status = (await tracker.snapshot())["prod"]
    assert (status.state, status.warmups) == ("warm", 1)
    assert status.mean_cold_start_s == pytest.approx(0.3 * 430 + 0.7 * 424)


async def test_an_unhealthy_touch_shows_the_tier_warming_at_once(tracker, clock):
    tracker.record_success("dev", 1.0)
    probe = ScriptedProbe(clock, [False, True])
    task = asyncio.create_task(tracker.warm_up("dev", probe))
    await clock.advance(0.5)
    assert (await tracker.state("dev")).state == "warming"
    await finish(clock, task)
    assert task.result().state == "warm"
    assert probe.calls == [0, 1]


async def test_a_cancelled_caller_leaves_the_warm_up_running(tracker, clock):
    probe = ScriptedProbe(clock, [True], takes_s=50)
    impatient = asyncio.create_task(tracker.warm_up("dev", probe))
    patient = asyncio.create_task(tracker.warm_up("dev", probe))
    await clock.advance(10)
    impatient.cancel()
    await finish(clock, patient)
    assert patient.result().state == "warm"


async def test_aclose_stops_a_warm_up_and_gives_its_lease_back(clock):
    store = MemoryStore()
    tracker = WarmthTracker({"prod": PROD}, store, clock, owner="one")
    tracker.trigger_warm_up("prod", ScriptedProbe(clock, [True], takes_s=400))
    await clock.advance(30)
    await tracker.aclose()
    record = await store.load("prod")
    assert record is not None
    assert (record.state, record.lease_owner) == ("cold", None)


async def test_a_warm_up_ends_even_when_its_heartbeat_is_mid_write(clock):
    # The tier answers healthy while the lease's renewal is on its way to the store: the
    # warm-up must still end, store warm and give the lease back, however the store treats
    # a cancel (CancelLosingStore loses it, as redis-py does on Python 3.11).
    store = CancelLosingStore()
    tracker = WarmthTracker({"prod": PROD}, store, clock, owner="one", lease_ttl_s=3.0)
    healthy: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def probe() -> bool:
        return await healthy

    warm_up = asyncio.create_task(tracker.warm_up("prod", probe))
    await clock.advance(0.5)  # the lease taken, the probe held by the booting tier
    store.hold()
    await clock.advance(0.5)  # a third of the lease: its renewal is in flight
    healthy.set_result(True)
    for _ in range(10):
        await asyncio.sleep(0)  # the warm-up sees the answer and stops its heartbeat
    store.release()  # the renewal lands
    for _ in range(10):
        if warm_up.done():
            break
        await clock.advance(1.0)
    assert warm_up.done(), "the warm-up never ended: its heartbeat renews the lease for good"
    record = await store.load("prod")
    assert record is not None
    assert (record.state, record.lease_owner) == ("warm", None)
    await tracker.aclose()


# -- waiting -------------------------------------------------------------------------------


async def test_wait_warm_returns_true_when_the_warm_up_lands(tracker, clock):
    tracker.trigger_warm_up("dev", ScriptedProbe(clock, [True], takes_s=45))
    waiter = asyncio.create_task(tracker.wait_warm("dev", timeout_s=120))
    await finish(clock, waiter)
    assert waiter.result() is True
    assert clock.monotonic() == pytest.approx(45, abs=1)


async def test_wait_warm_gives_up_at_its_timeout(tracker, clock):
    tracker.trigger_warm_up("prod", ScriptedProbe(clock, [True], takes_s=424))
    waiter = asyncio.create_task(tracker.wait_warm("prod", timeout_s=30))
    await finish(clock, waiter)
    assert waiter.result() is False
    assert clock.monotonic() == pytest.approx(30, abs=1)


async def test_wait_warm_returns_false_at_once_for_a_down_tier(tracker):
    for _ in range(3):
        tracker.record_failure("local", "refused")
    assert await tracker.wait_warm("local", timeout_s=60) is False


async def test_a_crashed_workers_lease_expires_and_is_taken_over(clock):
    store = MemoryStore()
    now = clock.time()
    crashed = WarmthRecord(state="warming", since=now, lease_owner="dead", lease_expires=now + 30)
    await store.update("prod", lambda _: crashed)
    tracker = WarmthTracker({"prod": PROD}, store, clock, owner="alive")
    probe = ScriptedProbe(clock, [True], takes_s=300)
    task = asyncio.create_task(tracker.warm_up("prod", probe))
    await clock.advance(29)
    assert probe.calls == []  # the lease still looks alive
    await clock.advance(2)
    assert len(probe.calls) == 1
    taken = await store.load("prod")
    assert taken is not None
    assert (taken.state, taken.lease_owner) == ("warming", "alive")
    await finish(clock, task)
    assert task.result().state == "warm"
    await tracker.aclose()


async def test_an_expired_lease_reads_as_cold_not_warming(clock):
    store = MemoryStore()
    now = clock.time()
    crashed = WarmthRecord(state="warming", since=now, lease_owner="dead", lease_expires=now + 30)
    await store.update("prod", lambda _: crashed)
    tracker = WarmthTracker({"prod": PROD}, store, clock)
    assert (await tracker.state("prod")).state == "warming"
    await clock.advance(31)
    stale = await tracker.state("prod")
    assert (stale.state, stale.since) == ("cold", now + 30)


# -- writes stay off the hot path ----------------------------------------------------------


async def test_successes_on_a_warm_tier_are_written_at_most_every_interval(clock):
    store = CountingStore()
    tracker = WarmthTracker({"dev": DEV}, store, clock)
    for _ in range(100):
        tracker.record_success("dev", 1.0)
        await clock.advance(0.1)
    assert store.updates == 1  # the transition to warm
    await clock.advance(15)
    tracker.record_success("dev", 1.0)
    await clock.advance(0)
    assert store.updates == 2
    await tracker.aclose()


async def test_a_broken_store_degrades_to_this_workers_view(clock):
    tracker = WarmthTracker({"dev": DEV}, BrokenStore(), clock)
    tracker.record_success("dev", 1.0)
    await clock.advance(2)
    assert (await tracker.state("dev")).state == "warm"
    assert (await tracker.snapshot())["dev"].state == "warm"
    await tracker.aclose()


# -- status ----------------------------------------------------------------------------------


async def test_snapshot_has_everything_status_shows(clock):
    berlin = msgspec.structs.replace(
        PROD, keep_warm=parse_schedule("Mon-Fri 08:00-19:00 Europe/Berlin")
    )
    tracker = WarmthTracker({"prod": berlin, "local": LOCAL}, MemoryStore(), clock)
    tracker.record_success("prod", 2.5)
    tracker.record_failure("prod", "prod answered 500")
    body = msgspec.json.decode(msgspec.json.encode(await tracker.snapshot()))
    assert body["prod"] == {
        "state": "warm",
        "since": "2026-11-23T09:00:00+00:00",
        "eta_s": 0.0,
        "last_success": "2026-11-23T09:00:00+00:00",
        "last_latency_s": 2.5,
        "last_error": "prod answered 500",
        "consecutive_failures": 1,
        "down_since": None,
        "next_trial": None,
        "trials": 0,
        "warmups": 0,
        "mean_cold_start_s": 424.0,
        "keep_warm": {
            "schedule": "Mon-Fri 08:00-19:00 Europe/Berlin",
            "in_window": True,
            "next_touch": "2026-11-23T09:12:00+00:00",  # 80 % of 900 s after the success
        },
    }
    assert body["local"]["keep_warm"] == {"schedule": "off", "in_window": False, "next_touch": None}
    await tracker.aclose()


async def test_wait_warm_after_triggering_a_retry_of_a_down_tier_waits_for_it(tracker, clock):
    for _ in range(3):
        tracker.record_failure("dev", "refused")
    await clock.advance(60)
    tracker.trigger_warm_up("dev", ScriptedProbe(clock, [True], takes_s=20))
    waiter = asyncio.create_task(tracker.wait_warm("dev", timeout_s=120))
    await finish(clock, waiter)
    assert waiter.result() is True


async def test_wait_warm_on_a_down_tier_whose_retry_is_refused_returns_false(tracker, clock):
    for _ in range(3):
        tracker.record_failure("dev", "refused")
    probe = ScriptedProbe(clock, [True])
    tracker.trigger_warm_up("dev", probe)  # inside the retry interval: refused
    waiter = asyncio.create_task(tracker.wait_warm("dev", timeout_s=120))
    await clock.advance(0)
    assert waiter.done()
    assert (waiter.result(), probe.calls) == (False, [])


# -- configuration ---------------------------------------------------------------------------


def tiers_of(tmp_path: Path, toml: str) -> dict[str, Tier]:
    """The tiers of a gateway.toml beside the repo's tiers.toml, as settings resolve them."""
    path = tmp_path / "gateway.toml"
    path.write_text(f'tiers_file = "{REPO / "config" / "tiers.toml"}"\n' + toml)
    return load_settings(path, environ={}).tiers


def test_configs_come_from_the_tiers_file(tmp_path):
    tiers = tiers_of(
        tmp_path,
        '[tiers.dev]\n[tiers.prod]\nkeep_warm = "Mon-Fri 08:00-19:00 Europe/Berlin"\n',
    )
    prod = TierWarmthConfig.for_tier(tiers["prod"])
    assert (prod.scales_to_zero, prod.expected_cold_start_s, prod.scaledown_window_s) == (
        True,
        424.0,
        900.0,
    )
    assert (prod.startup_timeout_s, prod.keep_warm.mode, prod.probe_is_free) == (
        900.0,
        "windows",
        False,
    )
    assert (prod.down_retry_after_s, prod.down_retry_max_s) == (60.0, 900.0)  # a trial boots
    assert prod.down_after_silence_s == 5.0
    dev = tiers["dev"]
    assert dev.spec is not None
    kept_up = msgspec.structs.replace(
        dev, kind="modal", spec=msgspec.structs.replace(dev.spec, min_containers=1)
    )
    kept = TierWarmthConfig.for_tier(kept_up)
    assert (kept.scales_to_zero, kept.probe_is_free) == (False, True)
    assert (kept.down_retry_after_s, kept.down_retry_max_s) == (5.0, 60.0)  # probes are free
    assert TierWarmthConfig.for_tier(msgspec.structs.replace(dev, kind="openai")).probe_is_free


def test_the_embedded_tier_has_its_measured_facts_and_gateway_toml_its_backoff(tmp_path):
    tiers = tiers_of(
        tmp_path,
        "[tiers.dev]\ndown_retry_after_s = 2\ndown_retry_max_s = 30\ndown_after_silence_s = 1\n",
    )
    local = TierWarmthConfig.for_tier(tiers["dev"])  # no URL: the embedded CPU tier
    assert (local.kind, local.expected_cold_start_s, local.startup_timeout_s) == (
        "local",
        30.0,
        300.0,
    )
    assert (local.scales_to_zero, local.keep_warm.mode) == (False, "off")
    assert (local.down_retry_after_s, local.down_retry_max_s) == (2.0, 30.0)
    assert local.down_after_silence_s == 1.0
