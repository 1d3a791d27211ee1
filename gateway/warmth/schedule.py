"""Keep-warm schedules: when the gateway touches a tier so it does not scale to zero.

A schedule is ``off``, ``always``, or weekly windows separated by ``;``, each with its zone::

    >>> s = parse_schedule("Mon-Fri 08:00-19:00 Europe/Berlin; Sat 10:00-14:00 UTC")
    >>> in_window(s, datetime(2026, 11, 27, 9, 0, tzinfo=UTC))    # Fri 10:00 in Berlin
    True

Days are ``Mon``..``Sun``, ranges (``Mon-Fri``, ``Fri-Mon`` wraps) and lists (``Mon,Wed``).
Times are local wall-clock ``HH:MM``; an end of ``24:00`` is midnight, an end before the
start runs past midnight into the next day. Summer time follows the zone: 08:00 Berlin is
07:00 UTC in winter and 06:00 UTC in summer.

Inside a window the tier is touched (a cheap probe) once ``touch_fraction`` (80 %) of its
scale-down window has passed since its last success, so it never idles long enough for the
platform to stop it. ``lead_s`` lets a window count as open that much early, so a tier with
a 7-minute cold start is already warm when the window opens. ``run_keepwarm`` is the loop
that acts on it (``gateway.warmth.loops``). Pure: settings parse each tier's schedule with
it as they load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
TOUCH_FRACTION = 0.8  # touch at 80 % of the scale-down window: 20 % left covers a slow probe

_TIME = re.compile(r"^(\d{2}):(\d{2})$")


class ScheduleError(ValueError):
    """A keep-warm schedule that cannot be read; the message quotes the bad part."""


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday, the day the window starts on
    start_min: int  # minutes after local midnight
    end_min: int  # may be <= start_min: the window runs past midnight
    zone: ZoneInfo
    text: str

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        today, yesterday = local.weekday(), (local.weekday() - 1) % 7
        if self.start_min < self.end_min:
            return today in self.days and self.start_min <= minute < self.end_min
        return (today in self.days and minute >= self.start_min) or (
            yesterday in self.days and minute < self.end_min
        )

    def starts_after(self, moment: datetime) -> datetime:
        """The first start of this window later than ``moment`` (within the next 8 days)."""
        local_date = moment.astimezone(self.zone).date()
        for offset in range(9):
            day = local_date + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            hour, minute = divmod(self.start_min, 60)
            start = datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.zone)
            # A start inside a spring-forward gap (02:30 on that night in Berlin) does not
            # exist; it is read with the offset before the gap and comes out as 03:30, while
            # the window (by wall clock) opens at 03:00. Late by under an hour, once a year,
            # and only for windows that start in the gap: accepted.
            start_utc = start.astimezone(UTC)
            if start_utc > moment:
                return start_utc
        raise AssertionError("a weekly window starts within 8 days")  # days is never empty


@dataclass(frozen=True)
class Schedule:
    mode: Literal["off", "always", "windows"]
    windows: tuple[Window, ...] = ()
    text: str = "off"


OFF = Schedule("off")


def parse_schedule(text: str) -> Schedule:
    """Read a schedule; :class:`ScheduleError` names the part that is wrong."""
    stripped = text.strip()
    if stripped.lower() in ("off", ""):
        return Schedule("off", (), "off")
    if stripped.lower() == "always":
        return Schedule("always", (), "always")
    windows = tuple(_parse_window(part.strip()) for part in stripped.split(";") if part.strip())
    if not windows:
        raise ScheduleError(f"keep_warm {text!r}: no window between the ';'")
    return Schedule("windows", windows, stripped)


def _parse_window(text: str) -> Window:
    parts = text.split()
    if len(parts) != 3:
        raise ScheduleError(
            f"keep_warm window {text!r}: expected 'DAYS HH:MM-HH:MM ZONE', "
            f"e.g. 'Mon-Fri 08:00-19:00 Europe/Berlin'"
        )
    days_text, hours_text, zone_text = parts
    days = _parse_days(days_text, text)
    start_text, sep, end_text = hours_text.partition("-")
    if not sep:
        raise ScheduleError(f"keep_warm window {text!r}: hours {hours_text!r} need 'HH:MM-HH:MM'")
    start, end = _parse_time(start_text, text), _parse_time(end_text, text)
    if start == MINUTES_PER_DAY:
        raise ScheduleError(f"keep_warm window {text!r}: a window cannot start at 24:00")
    if start == end % MINUTES_PER_DAY:
        raise ScheduleError(f"keep_warm window {text!r}: hours {hours_text!r} are empty")
    try:
        zone = ZoneInfo(zone_text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"keep_warm window {text!r}: unknown time zone {zone_text!r} "
            f"(an IANA name such as 'Europe/Berlin' or 'UTC')"
        ) from exc
    return Window(days, start, end, zone, text)


def _parse_days(days_text: str, window: str) -> frozenset[int]:
    days: set[int] = set()
    for item in days_text.split(","):
        first, sep, last = item.partition("-")
        a = _day(first, window)
        b = _day(last, window) if sep else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _day(name: str, window: str) -> int:
    key = name.strip().lower()
    if key in DAYS:
        return DAYS.index(key)
    raise ScheduleError(
        f"keep_warm window {window!r}: unknown day {name!r} (use Mon Tue Wed Thu Fri Sat Sun)"
    )


def _parse_time(text: str, window: str) -> int:
    match = _TIME.match(text)
    hours, minutes = (int(match[1]), int(match[2])) if match else (-1, -1)
    if not (0 <= hours <= 23 and 0 <= minutes <= 59) and (hours, minutes) != (24, 0):
        raise ScheduleError(f"keep_warm window {window!r}: bad time {text!r} (use HH:MM, 24 h)")
    return hours * 60 + minutes


def in_window(schedule: Schedule, now: datetime) -> bool:
    if schedule.mode == "always":
        return True
    return any(window.contains(now) for window in schedule.windows)


def keepwarm_due(
    schedule: Schedule,
    now: datetime,
    last_success: datetime | None,
    scaledown_window_s: float,
    *,
    lead_s: float = 0.0,
    touch_fraction: float = TOUCH_FRACTION,
) -> bool:
    """Whether the tier should be touched now. Pure: ``now`` and ``last_success`` are aware
    datetimes. Inside a window (or within ``lead_s`` before one opens), due once
    ``touch_fraction`` of the scale-down window has passed since the last success."""
    if schedule.mode == "off":
        return False
    if not (in_window(schedule, now) or in_window(schedule, now + timedelta(seconds=lead_s))):
        return False
    if last_success is None:
        return True
    return (now - last_success).total_seconds() >= touch_fraction * scaledown_window_s


def next_touch(
    schedule: Schedule,
    now: datetime,
    last_success: datetime | None,
    scaledown_window_s: float,
    *,
    lead_s: float = 0.0,
    touch_fraction: float = TOUCH_FRACTION,
) -> datetime | None:
    """When ``keepwarm_due`` will next be true (``now`` if it is); None when ``off``.

    Exact for ``always``; for windows, the later of the touch time and the next opening
    (less ``lead_s``), which is the answer whenever a window lasts longer than the touch
    interval, as real keep-warm windows do."""
    if schedule.mode == "off":
        return None
    if keepwarm_due(schedule, now, last_success, scaledown_window_s, lead_s=lead_s):
        return now
    touch = now
    if last_success is not None:
        touch = max(now, last_success + timedelta(seconds=touch_fraction * scaledown_window_s))
    lead = timedelta(seconds=lead_s)
    if schedule.mode == "always" or in_window(schedule, touch) or in_window(schedule, touch + lead):
        return touch
    return min(window.starts_after(touch + lead) for window in schedule.windows) - lead
