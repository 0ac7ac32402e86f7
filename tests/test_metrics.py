"""Supervisors' figures on hand-made ticket histories written into a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot.reports.metrics import Period, PeriodError, day_range, parse_period, report
from storage.db import session_factory
from storage.models import Customer, Message, SlaFiring, Ticket, TicketEvent

UTCZ = ZoneInfo("UTC")
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday
DAY = Period(T0.date(), T0.date(), UTCZ)
LATER = T0 + timedelta(days=30)


class Story:
    """One ticket's history, told step by step as the desk would have written it."""

    def __init__(self, s: AsyncSession, ticket: Ticket) -> None:
        self.s, self.t = s, ticket
        self.status = "new"

    @classmethod
    async def start(
        cls,
        s: AsyncSession,
        at: datetime,
        *,
        channel: str = "telegram",
        priority: str = "normal",
        team: str = "support",
        intent: str | None = None,
        language: str | None = "en",
    ) -> Story:
        customer = Customer(name="Ann", created_at=at)
        s.add(customer)
        await s.flush()
        t = Ticket(
            customer_id=customer.id,
            channel=channel,
            chat_id=f"chat{customer.id}",
            status="new",
            priority=priority,
            classification={"intent": intent} if intent else {},
            team=team,
            language=language,
            created_at=at,
            updated_at=at,
        )
        s.add(t)
        await s.flush()
        story = cls(s, t)
        story.event(at, "created", "customer", None, "new")
        story.event(at, "priority", "desk", None, priority)
        story.event(at, "team", "desk", None, team)
        story.say(at, "in", "customer")
        return story

    def event(
        self, at: datetime, kind: str, actor: str, old: Any, new: Any, reason: str = ""
    ) -> None:
        self.s.add(
            TicketEvent(
                ticket_id=self.t.id,
                kind=kind,
                actor=actor,
                from_value=None if old is None else str(old),
                to_value=None if new is None else str(new),
                reason=reason,
                at=at,
            )
        )

    def say(
        self,
        at: datetime,
        direction: str,
        author: str,
        delivery: str | None = None,
        purpose: str | None = None,
    ) -> Message:
        m = Message(
            ticket_id=self.t.id,
            direction=direction,
            author=author,
            channel=self.t.channel,
            delivery=delivery,
            purpose=purpose,
            created_at=at,
        )
        self.s.add(m)
        return m

    def set_status(self, at: datetime, status: str, actor: str) -> None:
        self.event(at, "status", actor, self.status, status)
        self.status = status
        self.t.status = status

    def assign(self, at: datetime, agent: str | None) -> None:
        self.event(at, "assignee", agent or "desk", self.t.assignee_id, agent)
        self.t.assignee_id = agent

    def customer(self, at: datetime) -> None:
        self.say(at, "in", "customer")
        if self.status == "pending":
            self.set_status(at, "open", "customer")

    def reply(self, at: datetime, agent: str, delivery: str = "delivered") -> None:
        if self.t.assignee_id is None:
            self.assign(at, agent)
        self.say(at, "out", agent, delivery)
        if self.status in ("new", "open"):
            self.set_status(at, "pending", agent)

    async def resolve(self, at: datetime, agent: str) -> Message:
        self.set_status(at, "resolved", agent)
        prompt = self.say(at, "system", "desk", "sent", "rating_prompt")
        await self.s.flush()
        return prompt

    def reopen(self, at: datetime) -> None:
        self.say(at, "in", "customer")
        self.set_status(at, "open", "customer")

    def rate(self, at: datetime, rating: int, prompt: Message) -> None:
        self.event(at, "rating", "customer", None, rating, f"rating prompt {prompt.id}")
        self.t.rating = rating


@pytest.fixture
async def s(engine: AsyncEngine) -> Any:
    async with session_factory(engine)() as session:
        yield session


def m(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


async def test_an_empty_period_has_zeros_and_no_figures(s: AsyncSession) -> None:
    got = await report(s, DAY, LATER)
    assert got["from"] == got["to"] == "2026-11-02"
    assert got["tz"] == "UTC"
    metrics = got["metrics"]
    assert metrics["tickets_created"] == metrics["resolutions"] == metrics["backlog"] == 0
    assert metrics["first_response"] == {
        "median": None,
        "p90": None,
        "mean": None,
        "n": 0,
        "unanswered": 0,
        "oldest_unanswered": None,
    }
    assert metrics["csat"]["value"] is None and metrics["csat"]["n"] == 0
    assert metrics["reopen_rate"] == {"value": None, "num": 0, "n": 0}
    assert metrics["sla_first_response"] is None
    assert got["notes"] == [
        "sla_first_response: no first-response target met or breached in the period"
    ]


async def test_acks_prompts_notes_and_unaccepted_replies_are_not_first_responses(
    s: AsyncSession,
) -> None:
    st = await Story.start(s, T0)
    st.say(T0 + m(1), "system", "desk", "sent")  # an acknowledgement row
    st.say(T0 + m(30), "note", "U0BOB")  # an internal note
    st.say(T0 + m(40), "out", "desk", "sent", "rating_prompt")
    st.say(T0 + m(50), "out", "U0BOB", "failed")  # the platform refused it
    st.say(T0 + m(55), "out", "U0BOB", "pending")  # not accepted yet
    st.reply(T0 + m(600), "U0BOB")
    await s.commit()
    got = (await report(s, DAY, LATER))["metrics"]
    assert got["first_response"]["median"] == 600
    assert got["first_response"]["n"] == 1
    assert got["first_response"]["unanswered"] == 0


async def test_a_reopened_ticket_resolved_twice(s: AsyncSession) -> None:
    st = await Story.start(s, T0)
    st.reply(T0 + m(60), "U0BOB")
    first = await st.resolve(T0 + m(3600), "U0BOB")
    st.rate(T0 + m(3700), 2, first)
    st.reopen(T0 + m(7200))  # the customer writes again
    st.reply(T0 + m(7500), "U0BOB")  # answers that message after 300 s
    second = await st.resolve(T0 + m(9000), "U0BOB")
    st.rate(T0 + m(9100), 5, second)
    await s.commit()
    got = (await report(s, DAY, LATER))["metrics"]
    assert got["tickets_created"] == 1
    assert got["resolutions"] == 2  # each resolve counts
    assert got["tickets_resolved"] == 1  # the ticket once
    assert got["resolution_time"] == {"median": 9000, "p90": 9000, "n": 1}  # latest resolve
    assert got["reply_time"] == {"median": 300, "p90": 300, "n": 1}
    assert got["reopen_rate"] == {"value": 100.0, "num": 1, "n": 1}
    assert got["one_touch"]["value"] == 0.0  # two replies and a reopen
    assert got["csat"]["counts"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1}
    assert got["csat"]["value"] == 50.0 and got["csat"]["mean"] == 3.5
    assert got["csat_response_rate"] == {"value": 100.0, "num": 2, "n": 2}
    assert got["backlog"] == 0


async def test_resolved_then_reopened_after_the_period_still_counts_in_it(
    s: AsyncSession,
) -> None:
    st = await Story.start(s, T0)
    st.reply(T0 + m(60), "U0BOB")
    await st.resolve(T0 + m(120), "U0BOB")
    st.reopen(T0 + timedelta(days=1))  # the next day
    await s.commit()
    monday = (await report(s, DAY, LATER))["metrics"]
    assert monday["tickets_resolved"] == 1 and monday["backlog"] == 0
    assert monday["one_touch"] == {"value": 100.0, "num": 1, "n": 1}  # as the day ended
    tuesday = Period(DAY.first + timedelta(days=1), DAY.first + timedelta(days=1), UTCZ)
    later = (await report(s, tuesday, LATER))["metrics"]
    assert later["tickets_resolved"] == 0 and later["backlog"] == 1


async def test_unanswered_tickets_with_the_oldest_age(s: AsyncSession) -> None:
    await Story.start(s, T0)
    await Story.start(s, T0 + m(3600))
    await s.commit()
    now = T0 + m(7200)  # asked during the day: ages run to now, not to midnight
    got = (await report(s, DAY, now))["metrics"]["first_response"]
    assert got["n"] == 0 and got["unanswered"] == 2
    assert got["oldest_unanswered"] == 7200


async def test_reply_time_is_measured_from_the_earliest_unanswered_message(
    s: AsyncSession,
) -> None:
    st = await Story.start(s, T0)
    st.reply(T0 + m(100), "U0BOB")
    st.customer(T0 + m(1000))
    st.customer(T0 + m(1500))
    st.reply(T0 + m(1600), "U0BOB")  # answers both: 600 s after the first
    st.reply(T0 + m(1700), "U0BOB")  # a follow-up: answers nothing new
    await s.commit()
    got = (await report(s, DAY, LATER))["metrics"]
    assert got["reply_time"] == {"median": 600, "p90": 600, "n": 1}


async def test_medians_and_p90_come_from_raw_values_and_ratios_are_sums(
    s: AsyncSession,
) -> None:
    week = day_range("2026-11-02", "2026-11-08", UTCZ)
    waits = [60, 60, 60, 60, 60, 60, 60, 60, 60, 86_400]  # one weekend ticket
    for n, wait in enumerate(waits):
        at = T0 + timedelta(days=n % 5)
        st = await Story.start(s, at)
        st.reply(at + m(wait), "U0BOB")
    await s.commit()
    got = (await report(s, week, LATER))["metrics"]["first_response"]
    assert got["median"] == 60 and got["n"] == 10
    assert got["p90"] == 60  # nearest rank: the 9th of 10
    assert got["mean"] == 8694  # the mean is dragged; the median is not


async def test_day_buckets_follow_desk_tz_around_midnight(s: AsyncSession) -> None:
    tokyo = ZoneInfo("Asia/Tokyo")  # UTC+9
    # 14:59 and 15:00 UTC are 23:59 on the 2nd and 00:00 on the 3rd in Tokyo.
    before = datetime(2026, 11, 2, 14, 59, tzinfo=UTC)
    after = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
    await Story.start(s, before)
    await Story.start(s, after)
    await s.commit()
    nov2 = await report(s, day_range("2026-11-02", "2026-11-02", tokyo), LATER)
    nov3 = await report(s, day_range("2026-11-03", "2026-11-03", tokyo), LATER)
    assert nov2["metrics"]["tickets_created"] == 1
    assert nov3["metrics"]["tickets_created"] == 1
    assert nov2["start"] == "2026-11-01T15:00:00+00:00"
    assert nov2["end"] == "2026-11-02T15:00:00+00:00"
    utc_day = await report(s, day_range("2026-11-02", "2026-11-02", UTCZ), LATER)
    assert utc_day["metrics"]["tickets_created"] == 2


async def test_a_rating_goes_to_the_assignee_at_the_prompt_even_after_they_left(
    s: AsyncSession,
) -> None:
    st = await Story.start(s, T0)
    st.reply(T0 + m(60), "U0DAN")
    prompt = await st.resolve(T0 + m(120), "U0DAN")
    st.assign(T0 + m(130), "U0BOB")  # handed over after the prompt went out
    st.rate(T0 + m(200), 5, prompt)
    await s.commit()
    got = await report(s, DAY, LATER, by="agent", agents={"U0BOB", "U0CAROL"})
    groups = {g["key"]: g for g in got["groups"]}
    dan = groups["U0DAN"]
    assert dan["former"] is True  # U0DAN is in no team any more
    assert dan["metrics"]["csat"]["n"] == 1 and dan["metrics"]["csat"]["value"] == 100.0
    assert dan["metrics"]["first_response"]["n"] == 1
    assert "U0BOB" not in groups or groups["U0BOB"]["metrics"]["csat"]["n"] == 0


async def test_a_group_under_five_tickets_is_flagged_not_hidden(s: AsyncSession) -> None:
    for n in range(6):
        await Story.start(s, T0 + m(n), channel="telegram", priority="high")
    await Story.start(s, T0, channel="whatsapp", priority="low", intent="billing")
    await s.commit()
    got = await report(s, DAY, LATER, by="channel")
    groups = {g["key"]: g for g in got["groups"]}
    assert groups["telegram"]["n"] == 6 and groups["telegram"]["low_n"] is False
    assert groups["whatsapp"]["n"] == 1 and groups["whatsapp"]["low_n"] is True
    assert groups["whatsapp"]["metrics"]["tickets_created"] == 1
    by_intent = {g["key"]: g for g in (await report(s, DAY, LATER, by="intent"))["groups"]}
    assert set(by_intent) == {"billing", "none"}
    by_priority = {g["key"] for g in (await report(s, DAY, LATER, by="priority"))["groups"]}
    assert by_priority == {"high", "low"}


async def test_group_ratios_add_up_to_the_total(s: AsyncSession) -> None:
    for agent, reopened in (("U0BOB", True), ("U0BOB", False), ("U0CAROL", False)):
        st = await Story.start(s, T0)
        st.reply(T0 + m(60), agent)
        await st.resolve(T0 + m(100), agent)
        if reopened:
            st.reopen(T0 + m(200))
            await st.resolve(T0 + m(300), agent)
    await s.commit()
    got = await report(s, DAY, LATER, by="agent", agents={"U0BOB", "U0CAROL"})
    total = got["metrics"]["reopen_rate"]
    assert total == {"value": 33.3, "num": 1, "n": 3}
    assert sum(g["metrics"]["reopen_rate"]["num"] for g in got["groups"]) == total["num"]
    assert sum(g["metrics"]["reopen_rate"]["n"] for g in got["groups"]) == total["n"]
    assert all(g["former"] is False for g in got["groups"])


async def test_backlog_counts_tickets_open_at_the_end(s: AsyncSession) -> None:
    old = await Story.start(s, T0 - timedelta(days=3))  # created before, still open
    old.reply(T0 - timedelta(days=3) + m(60), "U0BOB")
    done = await Story.start(s, T0)
    await done.resolve(T0 + m(60), "U0BOB")
    await s.commit()
    got = (await report(s, DAY, LATER))["metrics"]
    assert got["backlog"] == 1
    assert got["tickets_created"] == 1


def test_periods() -> None:
    tz = ZoneInfo("America/Los_Angeles")
    now = datetime(2026, 11, 3, 5, 0, tzinfo=UTC)  # still the 2nd in Los Angeles
    assert parse_period("today", now, tz).first.isoformat() == "2026-11-02"
    assert parse_period("yesterday", now, tz).first.isoformat() == "2026-11-01"
    week = parse_period("7d", now, tz)
    assert (week.first.isoformat(), week.last.isoformat()) == ("2026-10-27", "2026-11-02")
    span = parse_period("2026-10-01..2026-10-31", now, tz)
    assert span.start == datetime(2026, 10, 1, 7, 0, tzinfo=UTC)  # PDT
    assert span.end == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
    with pytest.raises(PeriodError):
        parse_period("last week", now, tz)
    with pytest.raises(PeriodError):
        parse_period("2026-10-31..2026-10-01", now, tz)


async def test_sla_first_response_is_met_over_met_and_breached_including_open_breaches(
    s: AsyncSession,
) -> None:
    met = await Story.start(s, T0)
    late = await Story.start(s, T0 + m(60))
    still_open = await Story.start(s, T0 + m(120))
    for story, what, due, fired in (
        (met, "met", T0 + m(3600), T0 + m(600)),
        (late, "breached", T0 + m(3660), T0 + m(3662)),  # answered after the breach: met late
        (late, "met_late", T0 + m(3660), T0 + m(4000)),
        (still_open, "breached", T0 + m(3720), T0 + m(3721)),  # never answered, past due
    ):
        s.add(
            SlaFiring(
                ticket_id=story.t.id,
                key=f"{story.t.id}:first_response:{what}",
                target="first_response",
                what=what,
                due_at=due,
                fired_at=fired,
            )
        )
    await s.commit()
    got = await report(s, DAY, LATER)
    sla = got["metrics"]["sla_first_response"]
    assert sla == {"value": 33.3, "num": 1, "n": 3}
    assert got["notes"] == []
    by_priority = await report(s, DAY, LATER, by="priority")
    (normal,) = by_priority["groups"]
    assert normal["metrics"]["sla_first_response"]["n"] == 3
