"""Business-calendar arithmetic: open time only, in the calendar's zone, to the second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from bot.domain.calendars import (
    ALWAYS,
    Calendar,
    add_business,
    add_business_days,
    business_between,
    is_open,
    next_open,
)

WEEKDAYS = {day: "09:00-17:00" for day in ("mon", "tue", "wed", "thu", "fri")}
BERLIN = Calendar(timezone="Europe/Berlin", hours=WEEKDAYS, holidays=("2026-04-03", "2026-04-06"))
BERLIN_ALWAYS = Calendar(timezone="Europe/Berlin", hours="always")
KOLKATA = Calendar(timezone="Asia/Kolkata", hours={"mon": "09:30-18:00", "sat": "10:00-14:00"})
AUCKLAND = Calendar(timezone="Pacific/Auckland", hours=WEEKDAYS)
LUNCH = Calendar(timezone="Europe/Berlin", hours={"mon": "09:00-12:00, 13:00-17:00"})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("start", "hours", "due"),
    [
        # Before opening: counting starts at 09:00.
        ("2026-03-10T07:00:00+01:00", 2, "2026-03-10T11:00:00+01:00"),
        # After closing: the next morning.
        ("2026-03-10T18:30:00+01:00", 2, "2026-03-11T11:00:00+01:00"),
        # Inside hours, running over closing into the next day.
        ("2026-03-10T16:00:00+01:00", 3, "2026-03-11T11:00:00+01:00"),
        # Exactly used up at closing: due at closing, not the next morning.
        ("2026-03-10T13:00:00+01:00", 4, "2026-03-10T17:00:00+01:00"),
        ("2026-03-10T09:00:00+01:00", 8, "2026-03-10T17:00:00+01:00"),
        # Over a weekend: Friday 16:00 + 2 h is Monday 10:00.
        ("2026-03-13T16:00:00+01:00", 2, "2026-03-16T10:00:00+01:00"),
        # Created on a Saturday: counts from Monday 09:00.
        ("2026-03-14T12:00:00+01:00", 1, "2026-03-16T10:00:00+01:00"),
        # Easter: Good Friday and Easter Monday are holidays.
        ("2026-04-02T16:00:00+02:00", 2, "2026-04-07T10:00:00+02:00"),
        # Spring DST (29 March, Sunday): Friday 16:00 CET + 4 h is Monday 12:00 CEST.
        ("2026-03-27T16:00:00+01:00", 4, "2026-03-30T12:00:00+02:00"),
        # Autumn DST (25 October, Sunday): Friday 16:00 CEST + 4 h is Monday 12:00 CET.
        ("2026-10-23T16:00:00+02:00", 4, "2026-10-26T12:00:00+01:00"),
        # Multi-day: 24 h of office time from Tuesday 10:00 is Friday 10:00.
        ("2026-03-10T10:00:00+01:00", 24, "2026-03-13T10:00:00+01:00"),
        # 40 h from Thursday 2 April (before Easter) runs to Friday 10 April 17:00, at closing.
        ("2026-04-02T09:00:00+02:00", 40, "2026-04-10T17:00:00+02:00"),
    ],
)
def test_add_business_on_office_hours(start: str, hours: float, due: str) -> None:
    result = add_business(BERLIN, at(start), hours * H)
    assert result == at(due)
    assert result.tzinfo is UTC
    # business_between is its inverse from the first open moment.
    assert business_between(BERLIN, at(start), result) == hours * H


def test_a_24_hour_always_target_across_spring_dst_is_24_real_hours() -> None:
    start = at("2026-03-28T12:00:00+01:00")
    due = add_business(BERLIN_ALWAYS, start, 24 * H)
    assert due - start == 24 * H
    assert due == at("2026-03-29T13:00:00+02:00")  # 13:00 on the wall clock: the hour skipped


def test_a_24_hour_always_target_across_autumn_dst_is_24_real_hours() -> None:
    start = at("2026-10-24T12:00:00+02:00")
    due = add_business(BERLIN_ALWAYS, start, 24 * H)
    assert due - start == 24 * H
    assert due == at("2026-10-25T11:00:00+01:00")


def test_the_always_calendar_is_always_open() -> None:
    moment = at("2026-12-25T03:17:00+00:00")
    assert is_open(ALWAYS, moment)
    assert next_open(ALWAYS, moment) == moment
    assert add_business(ALWAYS, moment, 40 * H) == moment + 40 * H


def test_open_and_next_open() -> None:
    assert is_open(BERLIN, at("2026-03-10T09:00:00+01:00"))
    assert not is_open(BERLIN, at("2026-03-10T17:00:00+01:00"))  # closing is not open
    assert not is_open(BERLIN, at("2026-04-03T12:00:00+02:00"))  # Good Friday
    assert not is_open(BERLIN, at("2026-03-14T12:00:00+01:00"))  # Saturday
    assert next_open(BERLIN, at("2026-03-10T17:00:00+01:00")) == at("2026-03-11T09:00:00+01:00")
    assert next_open(BERLIN, at("2026-04-02T18:00:00+02:00")) == at("2026-04-07T09:00:00+02:00")
    inside = at("2026-03-10T12:34:56+01:00")
    assert next_open(BERLIN, inside) == inside


def test_a_zone_far_from_utc_uses_its_own_days() -> None:
    # 03:00 UTC on Monday is 08:30 in Kolkata: opens at 09:30 local, 04:00 UTC.
    assert next_open(KOLKATA, at("2026-03-09T03:00:00+00:00")) == at("2026-03-09T04:00:00+00:00")
    # Sunday 22:00 UTC is already Monday 03:30 in Kolkata; 10 h: Monday 8.5 h, Saturday 1.5 h.
    due = add_business(KOLKATA, at("2026-03-08T22:00:00+00:00"), 10 * H)
    assert due == at("2026-03-14T11:30:00+05:30")
    # Auckland is UTC+13 in March (daylight time): Sunday 21:00 UTC is Monday 10:00 there.
    assert is_open(AUCKLAND, at("2026-03-08T21:00:00+00:00"))
    # Auckland leaves daylight time on 5 April 2026: Friday 16:00 +13 + 2 h is Monday 10:00 +12.
    due = add_business(AUCKLAND, at("2026-04-03T16:00:00+13:00"), 2 * H)
    assert due == at("2026-04-06T10:00:00+12:00")


def test_two_ranges_in_a_day() -> None:
    assert not is_open(LUNCH, at("2026-03-09T12:30:00+01:00"))
    assert add_business(LUNCH, at("2026-03-09T11:00:00+01:00"), 2 * H) == at(
        "2026-03-09T14:00:00+01:00"
    )
    # Used up exactly at the start of lunch: due at 12:00, not 13:00.
    assert add_business(LUNCH, at("2026-03-09T11:00:00+01:00"), H) == at(
        "2026-03-09T12:00:00+01:00"
    )


def test_zero_is_due_at_once_and_between_counts_only_open_time() -> None:
    night = at("2026-03-10T23:00:00+01:00")
    assert add_business(BERLIN, night, timedelta(0)) == night
    assert business_between(BERLIN, night, night - H) == timedelta(0)
    # Friday 12:00 to Monday 12:00: 5 h + 3 h.
    friday, monday = at("2026-03-13T12:00:00+01:00"), at("2026-03-16T12:00:00+01:00")
    assert business_between(BERLIN, friday, monday) == 8 * H


@pytest.mark.parametrize(
    ("start", "days", "due"),
    [
        ("2026-03-10T11:00:00+01:00", 1, "2026-03-11T11:00:00+01:00"),
        ("2026-03-13T11:00:00+01:00", 1, "2026-03-16T11:00:00+01:00"),  # over the weekend
        ("2026-04-02T11:00:00+02:00", 1, "2026-04-07T11:00:00+02:00"),  # over Easter
        ("2026-03-10T09:00:00+01:00", 1, "2026-03-10T17:00:00+01:00"),  # a whole day: its close
        ("2026-03-10T07:00:00+01:00", 2, "2026-03-11T17:00:00+01:00"),
        ("2026-03-10T20:00:00+01:00", 1, "2026-03-11T17:00:00+01:00"),
    ],
)
def test_business_days(start: str, days: int, due: str) -> None:
    assert add_business_days(BERLIN, at(start), days) == at(due)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"timezone": "Europe/Berlinn"}, "unknown time zone 'Europe/Berlinn'"),
        ({"hours": {"mon": "9-17"}}, "mon: '9-17' is not a range like 09:00-17:00"),
        ({"hours": {"mon": "17:00-09:00"}}, "closes before it opens"),
        ({"hours": {"mon": "09:00-25:00"}}, "is not a time of day"),
        ({"hours": {"mon": "09:00-13:00, 12:00-17:00"}}, "overlaps"),
        ({"hours": {"funday": "09:00-17:00"}}, "hours.dict[literal"),
        ({"hours": {}}, "never open"),
        ({"holidays": ["2026-02-30"]}, "holidays.0"),
    ],
)
def test_bad_calendars_say_what_is_wrong(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        Calendar.model_validate(data)
    assert message in str(err.value)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        is_open(BERLIN, datetime(2026, 3, 10, 12, 0))
