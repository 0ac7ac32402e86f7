"""Automatic assignment through the real dispatcher and outbox, with a controllable clock.

Every scenario runs on SQLite and PostgreSQL. Agents say they are available or away with the
real ``/desk available`` and ``/desk away`` slash-command events; time moves by the test's clock.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import wiring
from bot.delivery.jobs import AssignmentSweeper, PresencePoller
from bot.domain.events import AgentAction, SlashCommand
from bot.domain.rules import Rules, parse_rules
from storage.models import Ticket, TicketEvent

from .test_desk_core import Harness, make_harness

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
_seq = itertools.count(1)


def team_rules(
    *, capacity: int = 3, assignment: str = "round_robin", grace: float = 5, **extra: object
) -> Rules:
    return parse_rules(
        {
            "version": 1,
            "teams": {
                "support": {
                    "channel": "C0SUPPORT",
                    "agents": [ALICE, BOB, CAROL],
                    "lead": CAROL,
                    "assignment": assignment,
                    "capacity": capacity,
                },
                "billing": {"channel": "C0BILLING", "agents": [BOB], "assignment": "balanced"},
            },
            "routing": [{"when": {"keywords": ["invoice"]}, "team": "billing"}],
            "availability": {"away_grace_minutes": grace},
            **extra,
        }
    )


class Desk:
    """The harness plus the words of the people using it."""

    def __init__(self, engine: AsyncEngine, rules: Rules) -> None:
        self.h: Harness = make_harness(engine, rules)
        self.rules = rules
        self.sweeper = AssignmentSweeper(self.h.sessions, wiring.desks(rules), self.h.clock)

    async def says(self, chat: str, text: str) -> Ticket:
        await self.h.inbox.accept([self.h.customer(text, chat=chat)], {})
        await self.h.settle()
        return await self.latest(chat)

    async def slash(self, user: str, text: str) -> None:
        n = next(_seq)
        event = SlashCommand(
            external_id=f"command:{n}",
            conversation="slack:C0SUPPORT:commands",
            command="/desk",
            text=text,
            user_id=user,
            slack_channel="C0SUPPORT",
            response_url=None,
        )
        await self.h.inbox.accept([event], {})
        await self.h.settle()

    async def latest(self, chat: str) -> Ticket:
        async with self.h.sessions() as s:
            t = await s.scalar(
                select(Ticket).where(Ticket.chat_id == chat).order_by(Ticket.id.desc()).limit(1)
            )
            assert t is not None
            return t

    async def get(self, ticket_id: int) -> Ticket:
        async with self.h.sessions() as s:
            return await s.get_one(Ticket, ticket_id)

    async def act(self, ticket: Ticket, action: str, user: str) -> None:
        await self.h.inbox.accept([self.h.action(ticket, action, user)], {})
        await self.h.settle()

    async def sweep(self) -> None:
        await self.sweeper.run_once()
        await self.h.settle()

    def later(self, **kw: float) -> None:
        self.h.clock.advance(**kw)

    def thread_lines(self, ticket_id: int) -> list[str]:
        return [
            m.text
            for m in self.h.slack.sent
            if m.ticket_id == ticket_id and m.kind == "slack_thread"
        ]

    def cards(self, ticket_id: int) -> list[str]:
        return [m.destination for m in self.h.slack.sent if m.ticket_id == ticket_id]


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Desk]:
    yield Desk(engine, team_rules())


async def test_rotation_over_available_agents_and_the_card_and_thread_say_so(desk: Desk) -> None:
    for agent in (ALICE, BOB, CAROL):
        await desk.slash(agent, "available")
    got = [(await desk.says(f"c{n}", "where is my parcel?")).assignee_id for n in range(4)]
    assert got == [ALICE, BOB, CAROL, ALICE]
    first = await desk.latest("c0")
    assert first.status == "open" and first.assigned_by == "desk"
    assert "👤 Assigned to <@U0ALICE>: round robin, 1/3 open." in desk.thread_lines(first.id)
    async with desk.h.sessions() as s:
        reasons = (
            await s.scalars(
                select(TicketEvent.reason).where(
                    TicketEvent.ticket_id == first.id, TicketEvent.kind.in_(("team", "assignee"))
                )
            )
        ).all()
    assert reasons == [
        "no routing rule matched: default team",
        "assigned to <@U0ALICE>: round robin, 1/3 open",
    ]


async def test_an_agent_who_is_away_is_skipped(desk: Desk) -> None:
    await desk.slash(ALICE, "available")
    await desk.slash(CAROL, "available")
    got = [(await desk.says(f"c{n}", "hello")).assignee_id for n in range(3)]
    assert got == [ALICE, CAROL, ALICE]


async def test_routing_puts_the_card_in_the_teams_channel(desk: Desk) -> None:
    await desk.slash(BOB, "available")
    ticket = await desk.says("c1", "a question about my invoice")
    assert ticket.team == "billing" and ticket.slack_channel == "C0BILLING"
    assert ticket.assignee_id == BOB
    assert desk.cards(ticket.id)[0] == "C0BILLING"


async def test_all_away_queues_then_the_first_to_come_back_gets_urgent_before_older(
    engine: AsyncEngine,
) -> None:
    desk = Desk(engine, team_rules(capacity=1))
    older = await desk.says("c1", "my parcel is late")
    desk.later(minutes=5)
    urgent = await desk.says("c2", "the system down for everyone!")
    assert (older.assignee_id, urgent.assignee_id) == (None, None)
    assert older.status == "new"
    assert older.waiting_reason == "waiting: no available agent in support"
    desk.later(seconds=30)
    await desk.slash(BOB, "available")
    assert (await desk.get(urgent.id)).assignee_id == BOB
    still = await desk.get(older.id)
    assert still.assignee_id is None
    assert still.waiting_reason == "waiting: every available agent in support is at capacity (1)"


async def test_a_full_agent_gets_the_waiting_ticket_when_a_slot_frees(engine: AsyncEngine) -> None:
    desk = Desk(engine, team_rules(capacity=2))
    await desk.slash(ALICE, "available")
    one, two, three = [await desk.says(f"c{n}", "help") for n in range(3)]
    assert [one.assignee_id, two.assignee_id, three.assignee_id] == [ALICE, ALICE, None]
    await desk.act(one, "resolve", ALICE)
    assert (await desk.get(three.id)).assignee_id == ALICE


async def test_waiting_on_the_customer_does_not_count_against_capacity(engine: AsyncEngine) -> None:
    desk = Desk(engine, team_rules(capacity=1))
    await desk.slash(ALICE, "available")
    one = await desk.says("c1", "help")
    two = await desk.says("c2", "help too")
    assert two.assignee_id is None
    await desk.h.inbox.accept([desk.h.agent(one, ALICE, "On it, can you send a photo?")], {})
    await desk.h.settle()
    assert (await desk.get(one.id)).status == "pending"
    assert (await desk.get(two.id)).assignee_id == ALICE


async def test_balanced_gives_the_least_loaded(engine: AsyncEngine) -> None:
    desk = Desk(engine, team_rules(assignment="balanced"))
    await desk.slash(ALICE, "available")
    first = await desk.says("c1", "help")
    await desk.slash(BOB, "available")
    second = await desk.says("c2", "help")
    third = await desk.says("c3", "help")
    assert [first.assignee_id, second.assignee_id] == [ALICE, BOB]
    # 1 each: the tie goes to Alice, who has waited longer since her last ticket.
    assert third.assignee_id == ALICE
    assert "balanced, 2/3 open" in desk.thread_lines(third.id)[-1]


async def test_away_within_grace_changes_nothing_after_it_open_tickets_move(desk: Desk) -> None:
    await desk.slash(ALICE, "available")
    open_one = await desk.says("c1", "help")
    waiting_on_customer = await desk.says("c2", "help")
    await desk.h.inbox.accept([desk.h.agent(waiting_on_customer, ALICE, "Which order?")], {})
    await desk.h.settle()
    await desk.slash(BOB, "available")
    await desk.slash(ALICE, "away")
    desk.later(minutes=4)
    await desk.sweep()
    assert (await desk.get(open_one.id)).assignee_id == ALICE
    await desk.slash(ALICE, "available")  # back within the grace period
    await desk.slash(ALICE, "away")
    desk.later(minutes=4)
    await desk.sweep()
    assert (await desk.get(open_one.id)).assignee_id == ALICE  # the clock restarted
    desk.later(minutes=2)
    await desk.sweep()
    moved = await desk.get(open_one.id)
    assert moved.assignee_id == BOB
    assert any("<@U0ALICE> is away" in line for line in desk.thread_lines(open_one.id))
    stays = await desk.get(waiting_on_customer.id)
    assert (stays.assignee_id, stays.status) == (ALICE, "pending")


async def test_reassign_when_away_false_leaves_tickets(engine: AsyncEngine) -> None:
    rules = team_rules()
    rules = rules.model_copy(
        update={"availability": rules.availability.model_copy(update={"reassign_when_away": False})}
    )
    desk = Desk(engine, rules)
    await desk.slash(ALICE, "available")
    ticket = await desk.says("c1", "help")
    await desk.slash(BOB, "available")
    await desk.slash(ALICE, "away")
    desk.later(hours=1)
    await desk.sweep()
    assert (await desk.get(ticket.id)).assignee_id == ALICE


async def test_reopened_ticket_goes_back_to_its_assignee_or_elsewhere_if_away(desk: Desk) -> None:
    await desk.slash(ALICE, "available")
    ticket = await desk.says("c1", "help")
    await desk.act(ticket, "resolve", ALICE)
    await desk.says("c1", "it broke again")
    back = await desk.get(ticket.id)
    assert (back.status, back.assignee_id) == ("open", ALICE)
    assert "👤 Back to <@U0ALICE>, who had it before." in desk.thread_lines(ticket.id)
    await desk.act(back, "resolve", ALICE)
    await desk.slash(BOB, "available")
    await desk.slash(ALICE, "away")
    await desk.says("c1", "and again")
    moved = await desk.get(ticket.id)
    assert (moved.status, moved.assignee_id) == ("open", BOB)


async def test_a_claim_wins_over_an_automatic_assignment_made_a_moment_before(
    desk: Desk,
) -> None:
    await desk.slash(BOB, "available")
    ticket = await desk.says("c1", "help")
    assert ticket.assignee_id == BOB
    # Alice pressed Claim on the card as it appeared; her click is processed after the choice.
    await desk.act(ticket, "claim", ALICE)
    claimed = await desk.get(ticket.id)
    assert (claimed.assignee_id, claimed.assigned_by) == (ALICE, ALICE)
    assert any(
        "had been given to <@U0BOB> automatically" in x for x in desk.thread_lines(ticket.id)
    )
    # A person's claim is not taken over by another person's click.
    await desk.act(claimed, "claim", CAROL)
    assert (await desk.get(ticket.id)).assignee_id == ALICE


async def test_the_rotation_survives_a_restart(engine: AsyncEngine) -> None:
    desk = Desk(engine, team_rules())
    for agent in (ALICE, BOB, CAROL):
        await desk.slash(agent, "available")
    assert (await desk.says("c1", "help")).assignee_id == ALICE
    assert (await desk.says("c2", "help")).assignee_id == BOB
    restarted = Desk(engine, team_rules())  # a new process: nothing kept in memory
    restarted.h.seq = itertools.count(1000)  # the platform's ids go on, as real ones do
    assert (await restarted.says("c3", "help")).assignee_id == CAROL


async def test_manual_teams_and_files_without_teams_assign_nobody(engine: AsyncEngine) -> None:
    desk = Desk(engine, parse_rules({"version": 1}))
    await desk.slash(ALICE, "available")
    ticket = await desk.says("c1", "help")
    assert (ticket.assignee_id, ticket.team, ticket.slack_channel) == (None, "support", "C0SUPPORT")
    assert ticket.waiting_reason is None


async def test_two_dispatchers_racing_never_exceed_capacity_or_assign_twice(
    engine: AsyncEngine,
) -> None:
    rules = team_rules(capacity=2)
    one, two = Desk(engine, rules), Desk(engine, rules)
    await one.slash(ALICE, "available")
    await one.slash(BOB, "available")
    events = [one.h.customer("help please", chat=f"r{n}") for n in range(12)]
    await one.h.inbox.accept(events[::2], {})
    await one.h.inbox.accept(events[1::2], {})
    # Both processes claim and process inbox rows at the same time.
    for _ in range(20):
        await asyncio.gather(one.h.dispatcher.run_once(), two.h.dispatcher.run_once())
    await one.h.settle()
    await one.sweep()
    async with one.h.sessions() as s:
        per_agent = dict(
            (
                await s.execute(
                    select(Ticket.assignee_id, func.count())
                    .where(Ticket.assignee_id.is_not(None))
                    .group_by(Ticket.assignee_id)
                )
            ).all()
        )
        assigned_events = await s.scalar(
            select(func.count())
            .select_from(TicketEvent)
            .where(TicketEvent.kind == "assignee", TicketEvent.actor == "desk")
        )
        total = await s.scalar(select(func.count()).select_from(Ticket))
    assert total == 12
    assert per_agent == {ALICE: 2, BOB: 2}
    assert assigned_events == 4  # each ticket assigned once, each assignment recorded once
    announced = [m for m in one.h.slack.sent + two.h.slack.sent if m.text.startswith("👤")]
    assert len(announced) == 4


async def test_slack_presence_makes_an_agent_unavailable_but_never_available(
    engine: AsyncEngine,
) -> None:
    rules = team_rules()
    rules = rules.model_copy(
        update={
            "availability": rules.availability.model_copy(update={"assignment_presence": "slack"})
        }
    )
    desk = Desk(engine, rules)
    slack_says = {ALICE: "active", BOB: "active", CAROL: "active"}

    async def presence(user: str) -> str | None:
        return slack_says.get(user)

    poller = PresencePoller(desk.h.sessions, rules, desk.h.clock, presence)
    await desk.slash(ALICE, "available")
    await desk.slash(BOB, "available")
    mine = await desk.says("c1", "help")
    assert mine.assignee_id == ALICE
    slack_says[ALICE] = "away"
    await poller.run_once()
    assert (await desk.says("c2", "help")).assignee_id == BOB
    assert (await desk.says("c3", "help")).assignee_id == BOB  # Alice skipped while away
    desk.later(minutes=6)
    await desk.sweep()
    assert (await desk.get(mine.id)).assignee_id == BOB  # moved after the grace period
    # Bob is full (3/3). Carol never said she is available: Slack's "active" does not make
    # her so, and Alice's "away" still holds, so the next ticket waits.
    await poller.run_once()
    assert (await desk.says("c4", "help")).assignee_id is None


async def test_transfer_moves_the_card_to_the_new_team_and_the_customer_notices_nothing(
    desk: Desk,
) -> None:
    await desk.slash(ALICE, "available")
    await desk.slash(BOB, "available")
    ticket = await desk.says("c1", "my parcel is late")
    await desk.h.inbox.accept([desk.h.agent(ticket, ALICE, "note: looks like a billing thing")], {})
    await desk.h.settle()
    assert (ticket.team, ticket.assignee_id) == ("support", ALICE)
    customer_saw = len(desk.h.telegram.sent)
    old_ts = ticket.slack_ts
    move = AgentAction(
        external_id="action:transfer",
        conversation=f"slack:C0SUPPORT:{old_ts}",
        action="transfer",
        team="billing",
        ticket_id=ticket.id,
        user_id=ALICE,
        slack_channel="C0SUPPORT",
        message_ts=old_ts or "",
    )
    await desk.h.inbox.accept([move], {})
    await desk.h.settle()
    moved = await desk.get(ticket.id)
    assert (moved.team, moved.slack_channel, moved.assignee_id) == ("billing", "C0BILLING", BOB)
    assert moved.slack_ts not in (None, old_ts)
    assert len(desk.h.telegram.sent) == customer_saw  # nothing for the customer
    sent = [m for m in desk.h.slack.sent if m.ticket_id == ticket.id]
    frozen = next(m for m in sent if m.kind == "slack_card_update" and m.reply_to == old_ts)
    assert frozen.destination == "C0SUPPORT"
    assert not any(b["type"] == "actions" for b in frozen.blocks)
    assert "Transferred to team *billing* (<#C0BILLING>) by <@U0ALICE>" in str(frozen.blocks)
    new_card = next(m for m in sent if m.kind == "slack_card" and m.destination == "C0BILLING")
    assert "Team *billing* · Assigned to <@U0BOB>" in str(new_card.blocks)
    summary = next(m.text for m in sent if m.text.startswith("➡️ Transferred from team"))
    assert "*Ann:* my parcel is late" in summary
    assert "looks like a billing thing" in summary
    async with desk.h.sessions() as s:
        kinds = (
            await s.scalars(
                select(TicketEvent.reason).where(
                    TicketEvent.ticket_id == ticket.id, TicketEvent.kind == "team"
                )
            )
        ).all()
    assert kinds == ["no routing rule matched: default team", "transferred by <@U0ALICE>"]


async def test_the_card_says_the_team_and_why_a_ticket_waits(desk: Desk) -> None:
    ticket = await desk.says("c1", "hello")
    card = next(m for m in desk.h.slack.sent if m.kind == "slack_card")
    assert ticket.waiting_reason == "waiting: no available agent in support"
    assert "Team *support* · New, unclaimed · waiting: no available agent in support" in str(
        card.blocks
    )
    assert "Transfer to…" in str(card.blocks)
