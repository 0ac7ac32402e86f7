"""Time is injected so that windows and retries are tested without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, **delta: float) -> None:
        self._now += timedelta(**delta)


class OffsetClock:
    """The system clock plus an offset that only grows: the sandbox's "fast-forward", so a
    person can watch an SLA warning and an escalation without waiting hours."""

    def __init__(self, offset: timedelta = timedelta()) -> None:
        if offset < timedelta():
            raise ValueError("time only moves forward")
        self.offset = offset  # a continued sandbox starts with the offset it stopped with

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        step = timedelta(**delta)
        if step < timedelta():
            raise ValueError("time only moves forward")
        self.offset += step
