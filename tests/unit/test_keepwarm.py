"""Keep-warm schedules: parsing (errors name the bad part), windows across zones and summer
time, the due decision, the next touch, and the loop on a ManualClock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from gateway.clock import ManualClock
from gateway.warmth.loops import run_keepwarm
from gateway.warmth.schedule import (
    ScheduleError,
    in_window,
    keepwarm_due,
    next_touch,
    parse_schedule,
)
from gateway.warmth.store import MemoryStore
from gateway.warmth.tracker import WarmthTracker
from gateway.warmth.types import TierWarmthConfig

BERLIN_OFFICE = parse_schedule("Mon-Fri 08:00-19:00 Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mode"), [("off", "off"), ("", "off"), ("always", "always"), (" Always ", "always")]
)
def test_keywords(text, mode):
    assert parse_schedule(text).mode == mode


def test_several_windows_each_with_its_zone():
    schedule = parse_schedule("Mon-Fri 08:00-19:00 Europe/Berlin; Sat,Sun 10:00-14:00 UTC")
    assert schedule.mode == "windows"
    assert [sorted(w.days) for w in schedule.windows] == [[0, 1, 2, 3, 4], [5, 6]]
    assert [w.zone.key for w in schedule.windows] == ["Europe/Berlin", "UTC"]


def test_day_ranges_wrap_around_the_week():
    (window,) = parse_schedule("Fri-Mon 08:00-09:00 UTC").windows
    assert sorted(window.days) == [0, 4, 5, 6]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("Mon-Fri 08:00-19:00", "'Mon-Fri 08:00-19:00'"),  # no zone
        ("Mon-Fry 08:00-19:00 UTC", "'Fry'"),
        ("Mon 8:00-19:00 UTC", "'8:00'"),
        ("Mon 08:00-25:00 UTC", "'25:00'"),
        ("Mon 08:60-19:00 UTC", "'08:60'"),
        ("Mon 0800 UTC", "'0800'"),
        ("Mon 08:00-08:00 UTC", "are empty"),
        ("Mon 24:00-08:00 UTC", "cannot start at 24:00"),
        ("Mon 08:00-19:00 Mars/Olympus_Mons", "'Mars/Olympus_Mons'"),
        ("Mon 08:00-19:00 UTC; Tue 09:00-xx UTC", "'Tue 09:00-xx UTC'"),
        (" ; ", "no window"),
    ],
)
def test_errors_name_the_bad_part(text, named):
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text)
    assert named in str(caught.value)


# -- windows -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (utc(2026, 11, 23, 6, 59), False),  # Mon, winter (CET, UTC+1): 07:59 in Berlin
        (utc(2026, 11, 23, 7, 0), True),  # 08:00 in Berlin
        (utc(2026, 11, 23, 17, 59), True),
        (utc(2026, 11, 23, 18, 0), False),  # 19:00 in Berlin: the end is exclusive
        (utc(2026, 6, 15, 5, 59), False),  # Mon, summer (CEST, UTC+2): 07:59 in Berlin
        (utc(2026, 6, 15, 6, 0), True),
        (utc(2026, 6, 15, 16, 59), True),
        (utc(2026, 6, 15, 17, 0), False),
        (utc(2026, 11, 28, 12, 0), False),  # Saturday
        (utc(2026, 11, 22, 23, 30), False),  # Sunday in UTC, but 00:30 Monday in Berlin
    ],
)
def test_office_hours_follow_berlin_summer_time(moment, inside):
    assert in_window(BERLIN_OFFICE, moment) is inside


def test_window_on_the_spring_forward_night_is_two_real_hours():
    # 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST.
    night = parse_schedule("Sun 01:00-04:00 Europe/Berlin")
    inside = [
        m for m in range(0, 5 * 60) if in_window(night, utc(2026, 3, 28, 23) + timedelta(minutes=m))
    ]
    assert (inside[0], inside[-1], len(inside)) == (60, 179, 120)  # 00:00-01:59 UTC


def test_window_on_the_fall_back_night_is_four_real_hours():
    # 2026-10-25 in Berlin: 03:00 CEST falls back to 02:00 CET; 02:xx happens twice.
    night = parse_schedule("Sun 01:00-04:00 Europe/Berlin")
    inside = [
        m
        for m in range(0, 6 * 60)
        if in_window(night, utc(2026, 10, 24, 22) + timedelta(minutes=m))
    ]
    assert (inside[0], inside[-1], len(inside)) == (60, 299, 240)  # 23:00 Sat - 02:59 UTC


def test_a_window_in_new_york_seen_from_utc():
    nyc = parse_schedule("Mon 09:00-10:00 America/New_York")
    assert in_window(nyc, utc(2026, 11, 23, 14, 30))  # 09:30 EST
    assert not in_window(nyc, utc(2026, 11, 23, 9, 30))  # 09:30 UTC is 04:30 in New York


def test_a_window_past_midnight_belongs_to_the_day_it_starts():
    night = parse_schedule("Fri 22:00-06:00 UTC")
    assert not in_window(night, utc(2026, 11, 27, 21, 59))  # Fri
    assert in_window(night, utc(2026, 11, 27, 22, 0))
    assert in_window(night, utc(2026, 11, 28, 5, 59))  # Sat morning
    assert not in_window(night, utc(2026, 11, 28, 6, 0))
    assert not in_window(night, utc(2026, 11, 26, 1, 0))  # Thu morning: Wed did not start one


def test_an_end_of_24_00_runs_to_midnight():
    evening = parse_schedule("Mon 20:00-24:00 UTC")
    assert in_window(evening, utc(2026, 11, 23, 23, 59))
    assert not in_window(evening, utc(2026, 11, 24, 0, 0))


# -- the due decision and the next touch -----------------------------------------------------


def test_off_is_never_due():
    assert not keepwarm_due(parse_schedule("off"), utc(2026, 11, 23, 9), None, 300)


def test_due_at_eighty_percent_of_the_scale_down_window():
    always = parse_schedule("always")
    now = utc(2026, 11, 23, 9)
    assert keepwarm_due(always, now, None, 900)
    assert not keepwarm_due(always, now, now - timedelta(seconds=719), 900)
    assert keepwarm_due(always, now, now - timedelta(seconds=720), 900)


def test_not_due_outside_the_window_however_long_ago_the_success():
    saturday = utc(2026, 11, 28, 12)
    assert not keepwarm_due(BERLIN_OFFICE, saturday, saturday - timedelta(days=1), 900)


def test_lead_time_starts_a_slow_tier_before_the_window_opens():
    before_open = utc(2026, 11, 23, 6, 53)  # 07:53 in Berlin, 7 minutes before 08:00
    assert not keepwarm_due(BERLIN_OFFICE, before_open, None, 900)
    assert keepwarm_due(BERLIN_OFFICE, before_open, None, 900, lead_s=424)


def test_next_touch_inside_a_window_is_eighty_percent_after_the_success():
    success = utc(2026, 11, 23, 9)
    touch = next_touch(BERLIN_OFFICE, success + timedelta(seconds=10), success, 900)
    assert touch == success + timedelta(seconds=720)


def test_next_touch_outside_is_the_next_opening_less_the_lead():
    friday_evening = utc(2026, 11, 27, 19)  # 20:00 in Berlin
    touch = next_touch(BERLIN_OFFICE, friday_evening, friday_evening, 900, lead_s=424)
    assert touch == utc(2026, 11, 30, 7) - timedelta(seconds=424)  # Monday 08:00 Berlin


def test_next_touch_across_the_spring_forward_keeps_local_time():
    # Friday 2026-03-27 evening (CET); the next opening is Monday 30 March, 08:00 CEST.
    touch = next_touch(BERLIN_OFFICE, utc(2026, 3, 27, 19), None, 900)
    assert touch == utc(2026, 3, 30, 6)


def test_next_touch_is_none_when_off_and_now_when_due():
    now = utc(2026, 11, 23, 9)
    assert next_touch(parse_schedule("off"), now, None, 900) is None
    assert next_touch(parse_schedule("always"), now, None, 900) == now


# -- the loop ------------------------------------------------------------------------------


DEV = TierWarmthConfig(
    kind="modal",
    scales_to_zero=True,
    scaledown_window_s=300,
    expected_cold_start_s=60,
    startup_timeout_s=600,
)


class CountingProbe:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self) -> bool:
        self.calls.append(self.clock.monotonic())
        return True


async def test_always_touches_every_eighty_percent_of_the_window_and_stays_warm():
    clock = ManualClock(utc(2026, 11, 23, 9))
    tracker = WarmthTracker(
        {"dev": msgspec.structs.replace(DEV, keep_warm=parse_schedule("always"))},
        MemoryStore(),
        clock,
    )
    probe = CountingProbe(clock)
    loop = asyncio.create_task(run_keepwarm(tracker, {"dev": probe}))
    for _ in range(60):
        await clock.advance(10)
        assert (await tracker.state("dev")).state == "warm"
    assert probe.calls == [0, 240, 480]
    loop.cancel()
    await tracker.aclose()


async def test_a_window_touches_from_its_lead_time_until_it_closes():
    clock = ManualClock(utc(2026, 11, 23, 9))  # Monday
    schedule = parse_schedule("Mon 09:10-09:20 UTC")
    tracker = WarmthTracker(
        {"dev": msgspec.structs.replace(DEV, keep_warm=schedule)}, MemoryStore(), clock
    )
    probe = CountingProbe(clock)
    loop = asyncio.create_task(run_keepwarm(tracker, {"dev": probe}, ticks=60))
    await clock.advance(1800)
    # 09:09 (60 s lead, the seeded dev cold start), then every 240 s while open
    assert probe.calls == [540, 780, 1020]
    assert loop.done()
    status = (await tracker.snapshot())["dev"]
    assert status.keep_warm.in_window is False
    assert status.keep_warm.next_touch == "2026-11-30T09:09:00+00:00"  # next Monday
    await tracker.aclose()


async def test_workers_running_the_loop_together_touch_once():
    clock = ManualClock(utc(2026, 11, 23, 9))
    store = MemoryStore()
    config = {"dev": msgspec.structs.replace(DEV, keep_warm=parse_schedule("always"))}
    trackers = [WarmthTracker(config, store, clock, owner=f"w{i}") for i in range(3)]
    probes = [CountingProbe(clock) for _ in trackers]
    loops = [
        asyncio.create_task(run_keepwarm(t, {"dev": p}))
        for t, p in zip(trackers, probes, strict=True)
    ]
    await clock.advance(600)
    assert sorted(call for p in probes for call in p.calls) == [0, 240, 480]
    for loop in loops:
        loop.cancel()
    for tracker in trackers:
        await tracker.aclose()


async def test_keep_warm_does_not_touch_a_down_tier():
    clock = ManualClock(utc(2026, 11, 23, 9))
    tracker = WarmthTracker(
        {"dev": msgspec.structs.replace(DEV, keep_warm=parse_schedule("always"))},
        MemoryStore(),
        clock,
    )
    for _ in range(3):
        tracker.record_failure("dev", "dev answered 500")
    probe = CountingProbe(clock)
    loop = asyncio.create_task(run_keepwarm(tracker, {"dev": probe}, ticks=20))
    await clock.advance(600)
    assert loop.done()
    assert probe.calls == []
    assert (await tracker.state("dev")).state == "down"
    await tracker.aclose()
