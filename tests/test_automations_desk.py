"""Automations run by the live desk: event rules in the step's transaction, time rules as
durable timers fired at most once, on SQLite and PostgreSQL, with a controllable clock."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import wiring
from bot.automations.scheduler import AutomationScheduler
from bot.automations.views import explain
from bot.base.process import this_process
from bot.commands.automations import suspended_lines
from bot.commands.sandbox import sandbox_rules
from bot.console.desk_command import desk_command
from bot.core.assignment import AUTO, Assigner
from bot.core.step import Step
from bot.delivery.jobs import AssignmentSweeper
from bot.delivery.leases import reclaim_dead_leases
from bot.domain.automations import Automation, AutomationLimits
from bot.domain.classifier import Classification, RulesClassifier
from bot.domain.events import SlashCommand
from bot.domain.macros import Macro
from bot.domain.rules import Rules, load_rules
from bot.sla.timers import SlaScheduler
from storage.models import (
    Agent,
    AuditEntry,
    AutomationFiring,
    AutomationSuspension,
    AutomationTimer,
    Ticket,
    TicketEvent,
)

from .test_desk_core import RULES, Harness, make_harness

MACROS = (
    Macro(name="Still there?", text={"en": "Still there? (ticket #{ticket})", "es": "¿Sigue ahí?"}),
    Macro(name="Closing for now", text={"en": "Closing ticket #{ticket} for now."}),
)

ISSUE = """
- id: wait-for-customer
  on: [agent_reply]
  when: {channel: [telegram, whatsapp]}
  do: [{set_status: pending}]
- id: pending-reminder
  after: {pending: 10s}
  unless: {tags: [no-reminders]}
  do:
    - reply: {macro: "Still there?"}
    - add_tag: reminded
- id: pending-autoclose
  after: {pending: 30s}
  do: [{reply: {macro: "Closing for now"}}, {set_status: resolved}]
- id: angry-vip
  on: [ticket_created, customer_message]
  when: {vip: true, sentiment: negative}
  do: [{set_priority: urgent}, {note: "VIP and unhappy: please take this first"}, {notify: [lead]}]
  stop: true
"""


FULL = load_rules(Path(__file__).parent.parent / "rules.yaml")


def rules_with(text: str, base: Rules = RULES, **limits: int) -> Rules:
    loaded: list[dict[str, Any]] = yaml.safe_load(text)
    autos = tuple(Automation.model_validate(r) for r in loaded)
    return base.model_copy(
        update={
            "macros": (*base.macros, *MACROS),
            "automations": autos,
            "automation_limits": AutomationLimits(**limits),
        }
    )


def harness(engine: AsyncEngine, text: str = ISSUE, base: Rules = RULES, **limits: int) -> Harness:
    return make_harness(engine, rules_with(text, base, **limits))


def scheduler(desk: Harness, **options: Any) -> AutomationScheduler:
    rules = desk.dispatcher._desks.rules  # the rules the harness's desk runs
    return AutomationScheduler(desk.sessions, wiring.desks(rules), desk.clock, **options)


async def fire(desk: Harness, after: float = 0) -> int:
    """Move the clock ``after`` seconds on, fire what came due, deliver what it said."""
    desk.clock.advance(seconds=after)
    fired = await scheduler(desk).run_once()
    await desk.settle()
    return fired


def to_customer(desk: Harness) -> list[str]:
    return [m.text for m in desk.telegram.sent]


def thread(desk: Harness) -> list[str]:
    return [m.text for m in desk.slack.sent if m.kind == "slack_thread"]


async def firings(desk: Harness, rule: str | None = None) -> list[tuple[str, str]]:
    async with desk.sessions() as s:
        stmt = select(AutomationFiring.rule, AutomationFiring.key).order_by(AutomationFiring.id)
        if rule is not None:
            stmt = stmt.where(AutomationFiring.rule == rule)
        return [(r, k) for r, k in (await s.execute(stmt)).all()]


async def new_ticket(desk: Harness, text: str = "my parcel is late", chat: str = "42") -> Ticket:
    await desk.inbox.accept([desk.customer(text, chat=chat)], {})
    await desk.settle()
    return await desk.ticket()


async def reply(desk: Harness, t: Ticket, text: str = "It ships today.") -> None:
    await desk.inbox.accept([desk.agent(t, "U0ALICE", text)], {})
    await desk.settle()


async def set_priority(desk: Harness, t: Ticket, value: str) -> None:
    """An agent picks a priority in the card's menu."""
    pick = desk.action(t, "priority").model_copy(update={"value": value})
    await desk.inbox.accept([pick], {})
    await desk.settle()


async def customer(desk: Harness, text: str = "still waiting") -> None:
    await desk.inbox.accept([desk.customer(text)], {})
    await desk.settle()


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Harness]:
    yield harness(engine)


async def test_reminder_then_autoclose_each_once(desk: Harness) -> None:
    t = await new_ticket(desk)
    await reply(desk, t)
    assert (await desk.ticket()).status == "pending"
    before = len(to_customer(desk))
    assert await fire(desk, 9) == 0
    assert await fire(desk, 2) == 1
    said = to_customer(desk)[before:]
    assert said == [f"Still there? (ticket #{t.id})"]
    assert await fire(desk, 5) == 0
    assert await fire(desk, 20) == 1
    said = to_customer(desk)[before:]
    assert said[1] == f"Closing ticket #{t.id} for now."
    assert len(said) == 3 and "is resolved" in said[2]  # the desk's resolve and its rating prompt
    t = await desk.ticket()
    assert t.status == "resolved" and t.resolved_by == "pending-autoclose"
    assert t.assignee_id == "U0ALICE"
    # wait-for-customer fired on the reply (the desk had set pending already: nothing to do).
    assert [r for r, _ in await firings(desk)] == [
        "wait-for-customer",
        "pending-reminder",
        "pending-autoclose",
    ]
    assert await fire(desk, 3600) == 0
    assert len(to_customer(desk)) == before + 3
    async with desk.sessions() as s:
        story = (
            await s.execute(
                select(TicketEvent.kind, TicketEvent.actor).where(TicketEvent.ticket_id == t.id)
            )
        ).all()
    assert ("automation", "pending-reminder") in story
    assert ("automation", "pending-autoclose") in story
    assert ("tags", "pending-reminder") in story
    assert any("Automation *pending-reminder* sent to the customer" in x for x in thread(desk))


async def timer_rows(desk: Harness) -> list[tuple[str, datetime]]:
    async with desk.sessions() as s:
        rows = await s.execute(
            select(AutomationTimer.rule, AutomationTimer.due_at).order_by(AutomationTimer.id)
        )
        return [(r, d) for r, d in rows.all()]


async def test_a_customer_who_answers_cancels_the_reminder_and_the_close(desk: Harness) -> None:
    t = await new_ticket(desk)
    await reply(desk, t)
    assert {r for r, _ in await timer_rows(desk)} == {"pending-reminder", "pending-autoclose"}
    desk.clock.advance(seconds=5)
    await customer(desk, "here is my order number: 123")
    assert (await desk.ticket()).status == "open"
    assert await timer_rows(desk) == []  # the pending anchor ended
    before = len(to_customer(desk))
    assert await fire(desk, 3600) == 0
    assert len(to_customer(desk)) == before
    assert [r for r, _ in await firings(desk)] == ["wait-for-customer"]


async def test_an_anchor_restarted_fires_again_for_its_new_start_only(desk: Harness) -> None:
    t = await new_ticket(desk)
    await reply(desk, t)
    assert await fire(desk, 11) == 1  # the reminder for the first wait
    await customer(desk, "sorry, which order?")
    desk.clock.advance(seconds=3)
    await reply(desk, t, "The one from Monday.")  # pending again: a new anchor start
    rules = {r for r, _ in await timer_rows(desk)}
    assert rules == {"pending-reminder", "pending-autoclose"}
    assert await fire(desk, 5) == 0
    assert await fire(desk, 6) == 1
    reminders = [x for x in to_customer(desk) if x.startswith("Still there?")]
    assert len(reminders) == 2
    keys = [k for _, k in await firings(desk, "pending-reminder")]
    assert len(keys) == 2 and keys[0] != keys[1]


async def test_unless_checked_again_when_the_timer_comes_due(engine: AsyncEngine) -> None:
    extra = "- {id: quiet, on: [priority_changed], do: [{add_tag: no-reminders}]}\n"
    desk = harness(engine, ISSUE + extra)
    t = await new_ticket(desk)
    await reply(desk, t)
    desk.clock.advance(seconds=5)
    await set_priority(desk, t, "high")  # the agent's change tags it no-reminders
    assert await fire(desk, 6) == 1  # due, checked again: unless holds, it does not fire
    assert not [x for x in to_customer(desk) if x.startswith("Still there?")]
    assert [r for r, _ in await firings(desk)] == ["wait-for-customer", "quiet"]
    assert {r for r, _ in await timer_rows(desk)} == {"pending-autoclose"}


ACTIONS = """
- id: triage
  on: [ticket_created]
  when: {keywords: [refund]}
  do:
    - set_priority: urgent
    - add_tag: refund
    - note: "Check the payment first"
    - notify: [lead, channel]
    - assign: lead
- id: untag
  on: [customer_message]
  when: {tags: [refund], keywords: [thanks]}
  do: [{remove_tag: refund}, {assign: none}, {transfer: billing}]
"""


async def test_each_action_through_the_desks_own_paths(engine: AsyncEngine) -> None:
    desk = harness(engine, ACTIONS, FULL)
    t = await new_ticket(desk, "where is my refund")
    t = await desk.ticket()
    assert t.priority == "urgent"
    assert "automation triage → urgent" in t.priority_reasons  # the reason, on the card
    assert t.assignee_id == "U0CAROL"  # the support team's lead
    said = thread(desk)
    assert any("Automation *triage* (internal note): Check the payment first" in x for x in said)
    assert any("notified <@U0CAROL>, the team's channel" in x for x in said)
    posts = [m for m in desk.slack.sent if m.kind == "slack_post"]
    assert any(m.destination == "C0SUPPORT" and "triage" in m.text for m in posts)
    cards = [m for m in desk.slack.sent if m.kind in ("slack_card", "slack_card_update")]
    assert "automation triage → urgent" in str(cards[-1].blocks)
    assert not any("Check the payment" in x for x in to_customer(desk))  # never to the customer
    async with desk.sessions() as s:
        tags = await s.scalar(
            select(TicketEvent.to_value)
            .where(TicketEvent.ticket_id == t.id, TicketEvent.kind == "tags")
            .order_by(TicketEvent.id.desc())
        )
    assert tags == '["refund"]'
    await customer(desk, "thanks!")
    t = await desk.ticket()
    assert t.team == "billing" and t.slack_channel == "C0BILLING"
    async with desk.sessions() as s:
        events = (
            await s.execute(
                select(TicketEvent.kind, TicketEvent.actor, TicketEvent.to_value)
                .where(TicketEvent.ticket_id == t.id)
                .order_by(TicketEvent.id)
            )
        ).all()
    assert ("tags", "untag", "[]") in events
    assert ("assignee", "untag", None) in events
    assert ("team", "untag", "billing") in events
    assert ("automation", "untag", "untag") in events
    assert ("priority", "triage", "urgent") in events


async def test_stop_ends_the_list_for_that_event(engine: AsyncEngine) -> None:
    rules = """
- {id: first, on: [ticket_created], do: [{add_tag: a}], stop: true}
- {id: second, on: [ticket_created], do: [{add_tag: b}]}
- {id: third, on: [customer_message], do: [{add_tag: c}]}
"""
    desk = harness(engine, rules)
    await new_ticket(desk)
    await customer(desk)
    assert [r for r, _ in await firings(desk)] == ["first", "third"]


CHAIN = """
- {id: one, on: [ticket_created], do: [{set_priority: high}]}
- {id: two, on: [priority_changed], do: [{set_status: pending}]}
- {id: three, on: [status_changed], when: {status: [pending]}, do: [{add_tag: deep}]}
"""


async def test_a_chain_past_its_depth_stops_with_an_audit_entry(engine: AsyncEngine) -> None:
    desk = harness(engine, CHAIN, chain_depth=1)
    t = await new_ticket(desk)
    assert [r for r, _ in await firings(desk)] == ["one", "two"]
    assert (await desk.ticket()).status == "pending"
    async with desk.sessions() as s:
        audit = (
            await s.scalars(select(AuditEntry).where(AuditEntry.action == "automation_chain"))
        ).all()
        assert len(audit) == 1 and audit[0].target == f"ticket #{t.id}"
        assert "chain depth 2 is past chain_depth 1" in audit[0].detail["why"]
        assert "three" in audit[0].detail["why"]
    assert any("Automations stopped" in x for x in thread(desk))
    deeper = harness(engine, CHAIN, chain_depth=2)
    deeper.seq = itertools.count(100)  # new inbox ids: the inbox dedupes on them
    await new_ticket(deeper, "another question", chat="43")  # a second ticket
    assert "three" in [r for r, _ in await firings(deeper)]


async def test_a_rule_that_keeps_firing_is_suspended_and_reported(engine: AsyncEngine) -> None:
    rules = "- {id: echo, on: [customer_message], do: [{note: again}]}\n"
    desk = harness(engine, rules, per_ticket_per_day=2)
    await new_ticket(desk)
    for n in range(4):
        desk.clock.advance(minutes=1)
        await customer(desk, f"message {n}")
    assert len(await firings(desk, "echo")) == 2
    async with desk.sessions() as s:
        held = (await s.scalars(select(AutomationSuspension))).all()
    assert [h.rule for h in held] == ["echo"]
    posts = [m.text for m in desk.slack.sent if m.kind == "slack_post"]
    assert sum("*echo* is suspended" in x for x in posts) == 1
    desk.clock.advance(days=2)  # a suspended rule stays suspended on that ticket
    await customer(desk, "later")
    assert len(await firings(desk, "echo")) == 2


async def test_two_schedulers_racing_fire_once(desk: Harness) -> None:
    """Two desks (two lease owners) claim the same due timers at the same moment: on
    PostgreSQL with SKIP LOCKED, on SQLite one after the other; each reminder fires once."""
    chats = [str(n) for n in range(50, 56)]
    for chat in chats:
        t = await new_ticket(desk, "my parcel is late", chat=chat)
        await reply(desk, t)
    desk.clock.advance(seconds=11)
    a, b = scheduler(desk, owner="desk-a:1:a"), scheduler(desk, owner="desk-b:2:b")
    claimed = await asyncio.gather(a.run_once(), b.run_once(), a.run_once(), b.run_once())
    await desk.settle()
    assert sum(claimed) == len(chats)  # every timer was claimed by exactly one of them
    assert len(await firings(desk, "pending-reminder")) == len(chats)
    for chat in chats:
        got = [m.text for m in desk.telegram.sent if m.destination == chat]
        assert sum(x.startswith("Still there?") for x in got) == 1, got


async def test_a_kill_between_fire_and_commit_fires_once_later(
    desk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = await new_ticket(desk)
    await reply(desk, t)
    queue = Step.queue

    async def dies(self: Step, key: str) -> int:
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(Step, "queue", dies)
    assert await fire(desk, 11) == 1  # claimed, fired, rolled back
    monkeypatch.setattr(Step, "queue", queue)
    assert await firings(desk, "pending-reminder") == []
    assert not any(x.startswith("Still there?") for x in to_customer(desk))
    assert await fire(desk, 5) == 0  # still leased to the process that died
    desk.clock.advance(seconds=60)  # the lease (60 s) ran out
    # Both timers are due by now: the reminder first, then the close.
    assert await fire(desk) == 2
    assert len(await firings(desk, "pending-reminder")) == 1
    assert sum(x.startswith("Still there?") for x in to_customer(desk)) == 1
    assert await fire(desk, 120) == 0


async def test_late_after_downtime_fires_once_in_order(desk: Harness) -> None:
    t = await new_ticket(desk)
    await reply(desk, t)
    assert await fire(desk, 4 * 3600) == 2  # the desk was down for hours
    said = [x for x in to_customer(desk) if "Still there?" in x or "Closing" in x]
    assert said == [f"Still there? (ticket #{t.id})", f"Closing ticket #{t.id} for now."]
    assert (await desk.ticket()).status == "resolved"
    assert await fire(desk, 3600) == 0


async def test_no_refire_after_a_rules_reload(engine: AsyncEngine) -> None:
    desk = harness(engine)
    t = await new_ticket(desk)
    await reply(desk, t)
    assert await fire(desk, 11) == 1
    # rules.yaml edited (the reminder now waits 5 s, the close 40 s) and the desk restarted.
    edited = ISSUE.replace("{pending: 10s}", "{pending: 5s}").replace(
        "{pending: 30s}", "{pending: 40s}"
    )
    again = harness(engine, edited)
    again.seq = itertools.count(100)
    again.clock.advance(seconds=11)
    await set_priority(again, t, "high")  # any change of the ticket plans its timers again
    assert await fire(again, 1) == 0  # the reminder of this wait fired already
    assert await fire(again, 20) == 0  # the close: due 40 s after the pending start now
    assert await fire(again, 10) == 1
    assert len(await firings(again, "pending-reminder")) == 1
    assert len(await firings(again, "pending-autoclose")) == 1


async def test_business_time_across_a_weekend_and_a_dst_switch(engine: AsyncEngine) -> None:
    rules = "- {id: nudge, after: {pending: 1h}, calendar: office, do: [{note: nudge}]}\n"
    desk = harness(engine, rules)
    # Friday 27 March 2026, 16:30 in Berlin (CET); clocks go forward on Sunday 29 March.
    desk.clock.advance(
        seconds=(datetime(2026, 3, 27, 15, 30, tzinfo=UTC) - desk.clock.now()).total_seconds()
    )
    t = await new_ticket(desk)
    await reply(desk, t)
    # 30 minutes on Friday, 30 on Monday from 09:00 CEST (07:00 UTC).
    assert await timer_rows(desk) == [("nudge", datetime(2026, 3, 30, 7, 30, tzinfo=UTC))]
    target = datetime(2026, 3, 30, 7, 29, tzinfo=UTC)
    assert await fire(desk, (target - desk.clock.now()).total_seconds()) == 0
    assert await fire(desk, 60) == 1


async def test_desk_automations_lists_rules_firings_and_suspensions(
    engine: AsyncEngine, database_url: str
) -> None:
    rules = "- {id: echo, on: [customer_message], do: [{note: again}]}\n" + ISSUE
    desk = harness(engine, rules, per_ticket_per_day=2)
    t = await new_ticket(desk)
    for n in range(3):
        await customer(desk, f"message {n}")
    command = SlashCommand(
        external_id="command:1",
        conversation="slack:C0SUPPORT:commands",
        command="/desk",
        text="automations",
        user_id="U0BOB",
        slack_channel="C0SUPPORT",
        team_domain="acme",
    )
    async with desk.sessions() as s:
        said = await desk_command(wiring.desks(rules_with(rules))(s, desk.clock.now()), command)
    assert "`echo` (on customer_message): 2" in said
    assert "`pending-reminder` (10s after pending): 0" in said
    assert "*Suspended*" in said and f"`echo` on ticket #{t.id}" in said
    held = await suspended_lines(database_url)  # what `deskbot check` prints
    assert held and held[0].startswith(f"automation echo suspended on ticket #{t.id} since ")


async def test_explain_says_what_matched_what_did_not_and_what_is_scheduled(
    engine: AsyncEngine,
) -> None:
    rules = ISSUE + "- {id: vip-only, on: [customer_message], when: {vip: true}, do: [{note: x}]}\n"
    desk = harness(engine, rules)
    t = await new_ticket(desk)
    await reply(desk, t)
    async with desk.sessions() as s:
        lines = await explain(wiring.desks(rules_with(rules))(s, desk.clock.now()), t.id)
    text = "\n".join(lines)
    assert lines[0].startswith(f"ticket #{t.id}: pending, normal")
    assert "anchors: " in lines[1] and "pending since" in lines[1]
    assert "wait-for-customer (on agent_reply): matches now: fires on agent_reply" in text
    assert "vip-only (on customer_message): does not match now: when: vip does not match" in text
    due = (desk.clock.now() + timedelta(seconds=10)).isoformat()
    assert f"pending-reminder (10s after pending): scheduled: due {due}" in text
    assert "fired: wait-for-customer at " in text
    await customer(desk)
    async with desk.sessions() as s:
        lines = await explain(wiring.desks(rules_with(rules))(s, desk.clock.now()), t.id)
    assert (
        "pending-reminder (10s after pending): not scheduled: anchor pending is not running"
        in lines
    )


async def test_each_firing_is_in_the_audit_trail_with_its_rule_as_actor(desk: Harness) -> None:
    t = await new_ticket(desk)
    await reply(desk, t)
    await fire(desk, 11)
    async with desk.sessions() as s:
        rows = (await s.scalars(select(AuditEntry).where(AuditEntry.action == "automation"))).all()
    assert [(r.actor, r.target) for r in rows] == [
        ("wait-for-customer", f"ticket #{t.id}"),
        ("pending-reminder", f"ticket #{t.id}"),
    ]
    assert any("*pending-reminder* fired: 10s after pending" in x for x in thread(desk))


async def test_the_sandbox_shows_a_reminder_one_fast_forward_after_a_reply(
    engine: AsyncEngine,
) -> None:
    """The shipped rules.yaml has its automations commented out; the sandbox adds two, and the
    page's ⏩ +15 min brings the reminder (the scheduler looks every 2 seconds)."""
    assert not FULL.automations
    desk = make_harness(engine, sandbox_rules(RULES))
    t = await new_ticket(desk)
    await reply(desk, t)
    assert await fire(desk, 14 * 60) == 0
    assert await fire(desk, 60 + 1) == 1
    assert to_customer(desk)[-1] == (
        f"Are you still there? Reply here if you still need help with ticket #{t.id}."
    )
    assert sandbox_rules(rules_with(ISSUE)).automations == rules_with(ISSUE).automations


async def test_a_dead_desks_timer_lease_is_taken_over_at_once(desk: Harness) -> None:
    """A desk killed while it held a due timer: the next desk's takeover frees the lease, so the
    reminder fires seconds after the restart (once), not when the 60 s lease runs out."""
    t = await new_ticket(desk)
    await reply(desk, t)
    desk.clock.advance(seconds=11)
    earlier_me = this_process().rsplit(":", 1)[0] + ":0badb007"  # our pid, an earlier boot
    async with desk.sessions.begin() as s:
        row = await s.scalar(
            select(AutomationTimer).where(AutomationTimer.rule == "pending-reminder")
        )
        assert row is not None
        row.lease_owner, row.lease_until = earlier_me, desk.clock.now() + timedelta(seconds=60)
    assert await fire(desk) == 0  # still leased
    done = await reclaim_dead_leases(desk.sessions, desk.dispatcher._desks, desk.clock.now())
    assert earlier_me in done.owners
    assert await fire(desk) == 1
    assert sum(x.startswith("Still there?") for x in to_customer(desk)) == 1


class Moody(RulesClassifier):
    """The rules' priority, and a sentiment: negative when the message says "angry"."""

    async def classify(
        self, text: str, *, customer_key: str, recent_tickets: int
    ) -> Classification:
        cls = await super().classify(text, customer_key=customer_key, recent_tickets=recent_tickets)
        mood = "negative" if "angry" in text else "neutral"
        return dataclasses.replace(cls, details={"sentiment": mood})


async def test_sentiment_is_the_latest_messages(engine: AsyncEngine) -> None:
    rules = rules_with(
        "- {id: unhappy, on: [ticket_created, customer_message], when: {sentiment: negative},"
        " do: [{set_priority: urgent}, {note: unhappy}]}\n"
    )
    desk = make_harness(engine, rules, Moody(rules.priority))
    await new_ticket(desk, "my parcel is late")
    assert await firings(desk) == []
    await customer(desk, "I am getting angry now")
    assert [r for r, _ in await firings(desk)] == ["unhappy"]
    assert (await desk.ticket()).priority == "urgent"
    await customer(desk, "ok thanks")  # neutral again: the rule does not fire
    assert len(await firings(desk)) == 1


async def test_deskbot_automations_explain_on_a_live_database(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """``deskbot automations explain 1`` as a person runs it, beside a running desk."""
    from tests.test_automations import DESK
    from tests.test_cli_check import GOOD, ROOT

    text = DESK + "kb: {enabled: false}\nautomations:\n" + textwrap.indent(ISSUE, "  ")
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    desk = make_harness(engine, load_rules(path))
    t = await new_ticket(desk)
    await reply(desk, t)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DESK_", "SLACK_"))}
    env = {**clean, "PYTHONPATH": str(ROOT), **GOOD}
    env |= {"DESK_RULES": str(path), "DESK_DATABASE_URL": database_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "automations",
        "explain",
        f"#{t.id}",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].startswith(f"ticket #{t.id}: pending, normal, team support")
    assert any(
        line.startswith("pending-reminder (10s after pending): scheduled: due ") for line in lines
    )
    assert any(line.startswith("fired: wait-for-customer at ") for line in lines)


async def test_explain_after_a_reminder_says_it_fired_for_this_wait(desk: Harness) -> None:
    t = await new_ticket(desk)
    await reply(desk, t)
    await fire(desk, 11)
    async with desk.sessions() as s:
        lines = await explain(wiring.desks(rules_with(ISSUE))(s, desk.clock.now()), t.id)
    assert any(
        line.startswith("pending-reminder (10s after pending): fired already for the pending")
        for line in lines
    ), lines


ANCHORED = "".join(
    f"- {{id: {a}, after: {{{a}: 1h}}, do: [{{note: {a}}}]}}\n"
    for a in (
        "created",
        "pending",
        "last_customer_message",
        "last_agent_reply",
        "resolved",
        "unassigned",
    )
)


async def starts(desk: Harness) -> dict[str, int]:
    """Each scheduled rule (named after its anchor) → its anchor's start, in seconds from 09:00."""
    async with desk.sessions() as s:
        rows = (await s.execute(select(AutomationTimer.rule, AutomationTimer.anchor_start))).all()
    zero = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    return {rule: int((start - zero).total_seconds()) for rule, start in rows}


async def test_each_anchor_starts_restarts_and_ends_with_the_ticket(engine: AsyncEngine) -> None:
    desk = harness(engine, ANCHORED)
    t = await new_ticket(desk)  # at 0 s, nobody to take it
    assert await starts(desk) == {"created": 0, "last_customer_message": 0, "unassigned": 0}
    desk.clock.advance(seconds=10)
    await customer(desk, "hello?")  # restarts last_customer_message
    assert await starts(desk) == {"created": 0, "last_customer_message": 10, "unassigned": 0}
    desk.clock.advance(seconds=10)
    await reply(desk, t)  # the agent claims and answers: pending, assigned
    assert await starts(desk) == {"created": 0, "pending": 20, "last_agent_reply": 20}
    desk.clock.advance(seconds=10)
    await reply(desk, t, "And one more thing.")  # restarts last_agent_reply; still pending
    assert await starts(desk) == {"created": 0, "pending": 20, "last_agent_reply": 30}
    desk.clock.advance(seconds=10)
    await customer(desk, "thanks, one question")  # open again: pending and the reply end
    assert await starts(desk) == {"created": 0, "last_customer_message": 40}
    desk.clock.advance(seconds=10)
    await desk.inbox.accept([desk.action(t, "resolve")], {})
    await desk.settle()
    assert await starts(desk) == {"resolved": 50}  # resolved ends every other anchor
    desk.clock.advance(seconds=10)
    await customer(desk, "it broke again")  # reopened within the window
    got = await starts(desk)
    assert "resolved" not in got and got["last_customer_message"] == 60
    # The created anchor's rule fires an hour after creation... but it ended at the resolve.
    assert await fire(desk, 3600) >= 1
    fired = [r for r, _ in await firings(desk)]
    assert "created" not in fired and "last_customer_message" in fired


async def test_a_rule_whose_action_makes_its_condition_false_stops_by_itself(
    engine: AsyncEngine,
) -> None:
    rules = """
- id: greet
  on: [customer_message]
  unless: {tags: [greeted]}
  do: [{add_tag: greeted}, {assign: U0BOB}, {notify: [assignee]}]
"""
    desk = harness(engine, rules, FULL)
    t = await new_ticket(desk)
    for n in range(3):
        await customer(desk, f"hello {n}")
    assert [r for r, _ in await firings(desk)] == ["greet"]
    assert (await desk.ticket()).assignee_id == "U0BOB"
    dms = [m for m in desk.slack.sent if m.kind == "slack_post" and m.destination == "U0BOB"]
    assert len(dms) == 1 and f"ticket #{t.id}" in dms[0].text
    assert any("gave this ticket to <@U0BOB>" in x for x in thread(desk))


async def test_an_anchor_ended_outside_the_dispatcher_does_not_fire(engine: AsyncEngine) -> None:
    """A change written without the event phases (here a bare assignment) is no event of the
    rules; when the timer comes due, the ticket's facts say its unassigned anchor has ended."""
    rules = "- {id: nobody, after: {unassigned: 1h}, do: [{notify: [channel]}]}\n"
    desk = harness(engine, rules)
    t = await new_ticket(desk)
    assert set(await starts(desk)) == {"nobody"}
    async with desk.sessions.begin() as s:
        step = wiring.desks(rules_with(rules))(s, desk.clock.now())
        ticket = await s.get(Ticket, t.id)
        assert ticket is not None
        Assigner(step).give(ticket, "U0ALICE", AUTO, "the sweeper gave it")
    assert await fire(desk, 3601) == 1  # due, claimed, and not fired
    assert await firings(desk) == []


async def test_the_sweeps_assignment_is_an_event_of_the_rules(engine: AsyncEngine) -> None:
    """A waiting ticket the periodic sweep gives out (an agent's capacity freed, or Slack
    shows them back) is `assigned` like a person's claim: the rule fires, once."""
    rules = "- {id: welcome, on: [assigned], do: [{note: 'Assigned: say hello'}]}\n"
    desk = harness(engine, rules, base=FULL)
    t = await new_ticket(desk)  # nobody is available yet: it waits
    assert (await desk.ticket()).assignee_id is None and await firings(desk) == []
    async with desk.sessions.begin() as s:  # as Slack's presence or freed capacity would
        await s.merge(Agent(id="U0ALICE", available=True, updated_at=desk.clock.now()))
    sweeper = AssignmentSweeper(desk.sessions, wiring.desks(rules_with(rules, FULL)), desk.clock)
    assert await sweeper.run_once() == 1
    assert await sweeper.run_once() == 0
    await desk.settle()
    assert (await desk.ticket()).assignee_id == "U0ALICE"
    assert [r for r, _ in await firings(desk)] == ["welcome"]
    assert sum("Assigned: say hello" in line for line in thread(desk)) == 1
    assert t.id == (await desk.ticket()).id


async def test_an_sla_escalation_is_an_event_of_the_rules(engine: AsyncEngine) -> None:
    """rules.yaml's second escalation level hands the ticket to the lead and raises its
    priority: rules on `assigned` and `priority_changed` fire on it, once each."""
    rules = (
        "- {id: raised, on: [priority_changed], do: [{add_tag: escalated}]}\n"
        "- {id: lead-has-it, on: [assigned],"
        " do: [{note: 'The lead has it now'}]}\n"
    )
    desk = harness(engine, rules, base=FULL)
    await new_ticket(desk)
    sla = SlaScheduler(desk.sessions, wiring.desks(rules_with(rules, FULL)), desk.clock)
    desk.clock.advance(minutes=76)  # normal: first response in 1 h, level 2 15 min after
    while await sla.run_once():
        pass
    await desk.settle()
    ticket = await desk.ticket()
    assert (ticket.priority, ticket.assignee_id) == ("high", "U0CAROL")
    async with desk.sessions() as s:
        story = (await s.execute(select(TicketEvent.kind, TicketEvent.actor))).all()
    assert ("tags", "raised") in story
    assert sorted(r for r, _ in await firings(desk)) == ["lead-has-it", "raised"]
    assert sum("The lead has it now" in line for line in thread(desk)) == 1
    desk.clock.advance(minutes=5)
    await sla.run_once()
    assert len(await firings(desk)) == 2
