"""Business calendars: when a support team is open, and time counted only inside those hours.

Pure arithmetic on timezone-aware datetimes, no I/O. Everything is computed in UTC after the
calendar's local opening and closing moments are placed on the time line by the zone's rules, so
a duration is real elapsed seconds (a 24 h target across a DST switch ends 24 real hours later).

Why the stdlib and not a library: ``businesstimedelta`` (last release 2019) needs pytz and counts
wall-clock hours, and ``workalendar`` (last release 2023) knows national holidays but not opening
hours. Neither gives "real seconds inside open hours, in the zone's DST rules" with a team's own
holiday list, and the arithmetic is a few dozen lines on ``zoneinfo``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
# A calendar open at least one day a week is open again within this many days unless a run of
# holidays is longer; the bound only stops a loop over a calendar that can never open.
_SEARCH_DAYS = 3700


@lru_cache(maxsize=256)
def _parse_ranges(spec: str) -> tuple[tuple[int, int], ...]:
    """ "09:00-12:00, 13:00-17:00" → ((540, 720), (780, 1020)) in minutes after local midnight."""
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        match = _RANGE.match(part)
        if match is None:
            raise ValueError(f"{part.strip()!r} is not a range like 09:00-17:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
            raise ValueError(f"{part.strip()!r} is not a time of day (00:00 to 24:00)")
        if end <= start:
            raise ValueError(f"{part.strip()!r} closes before it opens")
        if ranges and start < ranges[-1][1]:
            raise ValueError(f"{part.strip()!r} overlaps or precedes the range before it")
        ranges.append((start, end))
    return tuple(ranges)


class Calendar(BaseModel):
    """Opening hours in one time zone. Days not listed under ``hours`` are closed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "UTC"
    hours: Literal["always"] | dict[Weekday, str] = "always"
    holidays: tuple[date, ...] = ()  # whole local days closed

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)"
            ) from None
        return value

    @field_validator("hours")
    @classmethod
    def _ranges(cls, value: Literal["always"] | dict[Weekday, str]) -> object:
        if isinstance(value, dict):
            for day, spec in value.items():
                try:
                    _parse_ranges(spec)
                except ValueError as exc:
                    raise ValueError(f"{day}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _opens_sometime(self) -> Calendar:
        if self.hours != "always" and not self.hours:
            raise ValueError("hours: the calendar is never open (list at least one day)")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


ALWAYS = Calendar(timezone="UTC", hours="always")


def _at_local(cal: Calendar, day: date, minutes: int) -> datetime:
    # 24:00 is the next midnight. A time inside a spring-forward gap lands after the gap
    # (fold=0 takes the offset before the switch), which is when the team can actually be open.
    if minutes == 24 * 60:
        local = datetime.combine(day + timedelta(days=1), time(0), tzinfo=cal.zone)
    else:
        local = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=cal.zone)
    return local.astimezone(UTC)


def open_intervals(cal: Calendar, day: date) -> list[tuple[datetime, datetime]]:
    """The open periods of one local day, as [start, end) in UTC; empty when closed."""
    if day in cal.holidays:
        return []
    if cal.hours == "always":
        ranges: tuple[tuple[int, int], ...] = ((0, 24 * 60),)
    else:
        spec = cal.hours.get(WEEKDAYS[day.weekday()])
        if spec is None:
            return []
        ranges = _parse_ranges(spec)
    return [
        (start, end)
        for start, end in ((_at_local(cal, day, a), _at_local(cal, day, b)) for a, b in ranges)
        if end > start  # a range wholly inside a DST gap has no real time in it
    ]


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; calendars need aware datetimes")
    return at.astimezone(UTC)


def _intervals_from(cal: Calendar, at: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Open periods that end after ``at``, in time order."""
    day = at.astimezone(cal.zone).date()
    for offset in range(_SEARCH_DAYS):
        for start, end in open_intervals(cal, day + timedelta(days=offset)):
            if end > at:
                yield start, end
    raise ValueError(f"calendar in {cal.timezone} is not open within {_SEARCH_DAYS} days")


def is_open(cal: Calendar, at: datetime) -> bool:
    at = _utc(at)
    start, _end = next(_intervals_from(cal, at))
    return start <= at


def next_open(cal: Calendar, at: datetime) -> datetime:
    """``at`` itself when open, else the next opening (in UTC)."""
    at = _utc(at)
    start, _end = next(_intervals_from(cal, at))
    return max(start, at)


def add_business(cal: Calendar, start: datetime, duration: timedelta) -> datetime:
    """The moment when ``duration`` of open time has passed since ``start``.

    A duration used up exactly at closing time is due at closing, not at the next opening; a
    zero duration is due at ``start`` itself, open or not.
    """
    at = _utc(start)
    if duration < timedelta(0):
        raise ValueError("a business duration cannot be negative")
    if duration == timedelta(0):
        return at
    left = duration
    for open_at, close_at in _intervals_from(cal, at):
        begin = max(open_at, at)
        if left <= close_at - begin:
            return begin + left
        left -= close_at - begin
    raise AssertionError("unreachable: _intervals_from raises when it runs out")


def business_between(cal: Calendar, a: datetime, b: datetime) -> timedelta:
    """Open time in [a, b); zero when b is not after a."""
    a, b = _utc(a), _utc(b)
    total = timedelta(0)
    if b <= a:
        return total
    for open_at, close_at in _intervals_from(cal, a):
        if open_at >= b:
            break
        total += min(close_at, b) - max(open_at, a)
    return total


def add_business_days(cal: Calendar, start: datetime, days: int) -> datetime:
    """``days`` business days after ``start``: the same share of a later open day.

    A ticket opened at 11:00 on a 09:00-17:00 calendar is due at 11:00 one open day later; one
    opened at (or before) the opening is due at the closing of the day it started, since that day's
    whole open time is what it was given. Days with other hours keep the same open time used so
    far (capped at that day's closing).
    """
    at = next_open(cal, start)
    if days <= 0:
        return at
    today = at.astimezone(cal.zone).date()
    periods = open_intervals(cal, today)
    used = business_between(cal, periods[0][0], at)
    day = today
    for _ in range(days):
        day += timedelta(days=1)
        while not open_intervals(cal, day):
            day += timedelta(days=1)
    if used == timedelta(0):
        # The day before the target day, at its closing: the whole of ``days`` open days.
        previous = day - timedelta(days=1)
        while not open_intervals(cal, previous):
            previous -= timedelta(days=1)
        return open_intervals(cal, previous)[-1][1]
    target = open_intervals(cal, day)
    length = sum((end - begin for begin, end in target), timedelta(0))
    if used >= length:
        return target[-1][1]
    return add_business(cal, target[0][0], used)
