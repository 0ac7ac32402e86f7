"""Who did what, shown and logged truthfully: the resolver on the card, one rating per resolve,
a claim by reply said in the thread, decisions in the log, and customer text shown verbatim.

The state machine through the inbox → dispatcher → outbox loop, with recording senders, on
SQLite and PostgreSQL; tests/e2e/test_ratings.py drives the same over HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import wiring
from bot.delivery.outbox import Metrics, RateLimits
from bot.domain.events import (
    CustomerButton,
    CustomerChannel,
    CustomerEdit,
    CustomerMessage,
    Sender,
    SlashCommand,
)
from bot.domain.outbound import Outbound
from bot.domain.rules import load_rules, parse_rules
from storage.models import AuditEntry, Message, Ticket, TicketEvent

from .test_desk_core import RULES, Harness, RecordingSender, make_harness


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Harness]:
    yield make_harness(engine)


def state_of(card: Outbound) -> str:
    """The card's state line ("Resolved by <@U…>…")."""
    block = next(b for b in card.blocks if b.get("block_id") == "state")
    return str(block["elements"][0]["text"])


def last_card(h: Harness) -> Outbound:
    return [o for o in h.slack.sent if o.kind in ("slack_card", "slack_card_update")][-1]


def press(
    h: Harness,
    data: str,
    *,
    chat: str = "42",
    query: bool = True,
    on: str | None = None,
    channel: CustomerChannel = "telegram",
) -> CustomerButton:
    n = next(h.seq)
    return CustomerButton(
        channel=channel,
        external_id=f"cb{n}",
        conversation=f"{channel}:{chat}",
        sender=Sender(external_id=chat, name="Ann"),
        chat_id=chat,
        data=data,
        callback_query_id=f"q{n}" if query else None,
        tapped_message_id=on,
    )


async def step(h: Harness, *events: Any) -> None:
    await h.inbox.accept(list(events), {})
    await h.settle()


async def prompts(h: Harness) -> list[Message]:
    async with h.sessions() as s:
        rows = await s.scalars(
            select(Message).where(Message.purpose == "rating_prompt").order_by(Message.id)
        )
        return list(rows.all())


async def rating_events(h: Harness) -> list[str | None]:
    async with h.sessions() as s:
        rows = await s.scalars(
            select(TicketEvent.to_value)
            .where(TicketEvent.kind == "rating")
            .order_by(TicketEvent.id)
        )
        return list(rows.all())


def rating_prompt(h: Harness) -> Outbound:
    return [o for o in h.telegram.sent if o.kind == "text" and o.buttons][-1]


async def resolved_ticket(
    h: Harness, claimer: str = "U0ALICE", resolver: str = "U0ALICE"
) -> Ticket:
    await step(h, h.customer("my parcel is lost"))
    ticket = await h.ticket()
    await step(h, h.action(ticket, "claim", claimer))
    await step(h, h.action(ticket, "resolve", resolver))
    return await h.ticket()


# -- item 4: the card names who resolved it ----------------------------------------------------


async def test_the_card_names_who_resolved_it_not_only_the_assignee(desk: Harness) -> None:
    # Carol is a supervisor (roles: in rules.yaml): she may resolve Bob's ticket.
    ticket = await resolved_ticket(desk, claimer="U0BOB", resolver="U0CAROL")
    assert ticket.resolved_by == "U0CAROL" and ticket.assignee_id == "U0BOB"
    assert state_of(last_card(desk)) == "Resolved by <@U0CAROL> · assigned to *Bob*"
    thread = [o.text for o in desk.slack.sent if o.kind == "slack_thread"]
    assert "✅ *Carol* resolved this ticket." in thread

    # Reopened: nobody has resolved it any more; it is Bob's again.
    await step(desk, desk.customer("it still hasn't come"))
    ticket = await desk.ticket()
    assert ticket.status == "open" and ticket.resolved_by is None
    assert state_of(last_card(desk)) == "Claimed by *Bob*"


async def test_a_fellow_agent_cannot_resolve_someone_elses_ticket(desk: Harness) -> None:
    ticket = await resolved_ticket(desk, claimer="U0BOB", resolver="U0ALICE")
    assert ticket.status == "open" and ticket.resolved_by is None
    assert state_of(last_card(desk)) == "Claimed by *Bob*"
    async with desk.sessions() as s:
        (entry,) = (await s.scalars(select(AuditEntry))).all()
    assert (entry.actor, entry.action, entry.target) == (
        "U0ALICE",
        "refused",
        f"ticket #{ticket.id}",
    )
    assert entry.detail == {"assignee": "U0BOB", "role": "agent", "wanted": "resolved"}


async def test_the_assignee_resolving_is_named_once(desk: Harness) -> None:
    await resolved_ticket(desk, claimer="U0CAROL", resolver="U0CAROL")
    assert state_of(last_card(desk)) == "Resolved by *Carol*"


# -- item 5: one rating per resolve -------------------------------------------------------------


async def test_a_second_tap_does_not_change_the_rating(desk: Harness) -> None:
    ticket = await resolved_ticket(desk)
    prompt = rating_prompt(desk)
    (row,) = await prompts(desk)
    assert (row.direction, row.author, row.ticket_id) == ("system", "desk", ticket.id)
    assert row.platform_message_id is not None  # recorded by the outbox, like agent replies
    data = [b.data for b in prompt.buttons]
    assert data == [f"rate:{ticket.id}:{row.id}:{n}" for n in range(1, 6)]
    assert all(len(d.encode()) <= 64 for d in data)

    await step(desk, press(desk, data[4], on=row.platform_message_id))
    thanks, removal = desk.telegram.sent[-2:]
    assert thanks.text == "Thank you! You rated us 5/5."
    assert (removal.kind, removal.destination, removal.reply_to) == (
        "edit_buttons",
        "42",
        row.platform_message_id,
    )
    assert removal.buttons == ()  # no buttons: the keyboard goes

    before = len(desk.telegram.sent)
    await step(desk, press(desk, data[0], on=row.platform_message_id))
    assert (await desk.ticket()).rating == 5
    assert await rating_events(desk) == ["5"]
    new = desk.telegram.sent[before:]
    answer = next(o for o in new if o.kind == "answer_callback")
    assert answer.text == f"You already rated ticket #{ticket.id}, thank you."
    assert not [o for o in new if o.kind == "text"]  # no second "thank you"
    ups = [o for o in desk.slack.sent if o.kind == "slack_thread" and "rated" in o.text]
    assert len(ups) == 1


async def test_reopen_spends_the_old_prompt_and_a_new_resolve_asks_again(desk: Harness) -> None:
    ticket = await resolved_ticket(desk)
    (first,) = await prompts(desk)
    old = [b.data for b in rating_prompt(desk).buttons]

    await step(desk, desk.customer("one more thing"))
    assert (await desk.ticket()).status == "open"
    removal = next(o for o in desk.telegram.sent if o.kind == "edit_buttons")
    assert removal.reply_to == first.platform_message_id  # the reopen took its buttons away

    await step(desk, press(desk, old[3]))
    assert (await desk.ticket()).rating is None
    answer = [o for o in desk.telegram.sent if o.kind == "answer_callback"][-1]
    assert answer.text == f"That rating request for ticket #{ticket.id} is no longer open."

    await step(desk, desk.action(ticket, "resolve"))
    second = (await prompts(desk))[-1]
    new = [b.data for b in rating_prompt(desk).buttons]
    assert second.id != first.id and new != old
    await step(desk, press(desk, old[0]))  # the first resolve's prompt still does nothing
    assert (await desk.ticket()).rating is None
    await step(desk, press(desk, new[1]))
    assert (await desk.ticket()).rating == 2
    assert await rating_events(desk) == ["2"]


async def test_a_rating_survives_a_reopen_until_the_next_resolve(desk: Harness) -> None:
    ticket = await resolved_ticket(desk)
    data = [b.data for b in rating_prompt(desk).buttons]
    await step(desk, press(desk, data[1]))
    await step(desk, desk.customer("actually, one more question"))
    assert [o.kind for o in desk.telegram.sent].count("edit_buttons") == 1  # gone already
    assert state_of(last_card(desk)) == "Claimed by *Alice* · rated 2/5"
    await step(desk, press(desk, data[4]))
    assert (await desk.ticket()).rating == 2
    await step(desk, desk.action(ticket, "resolve"))
    assert (await desk.ticket()).rating is None  # the new resolve has its own rating to come
    await step(desk, press(desk, rating_prompt(desk).buttons[4].data))
    assert await rating_events(desk) == ["2", "5"]


async def test_buttons_of_the_first_format_still_rate_once(desk: Harness) -> None:
    ticket = await resolved_ticket(desk)
    await step(desk, press(desk, f"rate:{ticket.id}:4", on="77"))
    assert (await desk.ticket()).rating == 4
    removal = [o for o in desk.telegram.sent if o.kind == "edit_buttons"][-1]
    assert removal.reply_to == "77"  # the message the tapped button was on
    await step(desk, press(desk, f"rate:{ticket.id}:1", on="77"))
    assert (await desk.ticket()).rating == 4
    assert await rating_events(desk) == ["4"]


async def test_a_button_from_another_chat_rates_nothing(desk: Harness) -> None:
    ticket = await resolved_ticket(desk)
    data = rating_prompt(desk).buttons[0].data
    await step(desk, press(desk, data, chat="666"))
    assert (await desk.ticket()).rating is None
    assert ticket.id and await rating_events(desk) == []


async def test_whatsapp_later_taps_are_answered_in_the_customers_language(
    engine: AsyncEngine,
) -> None:
    h = make_harness(engine)
    wa = RecordingSender()
    outbox = wiring.outbox(
        h.sessions,
        {"telegram": h.telegram, "slack": h.slack, "whatsapp": wa},
        wiring.desks(RULES),
        h.clock,
        Metrics(CollectorRegistry()),
        limits=RateLimits.lifted(),
    )
    h = Harness(h.sessions, h.clock, h.inbox, h.dispatcher, outbox, h.telegram, h.slack)
    first = CustomerMessage(
        channel="whatsapp",
        external_id="wamid.1",
        conversation="whatsapp:15551234567",
        sender=Sender(external_id="15551234567", name="Wei", language="zh"),
        chat_id="15551234567",
        platform_message_id="wamid.1",
        text="我的包裹丢了",
    )
    await step(h, first)
    ticket = await h.ticket()
    await step(h, h.action(ticket, "resolve"))
    prompt = wa.sent[-1]
    assert [b.text for b in prompt.buttons] == list("12345")
    wa_id = "15551234567"
    await step(h, press(h, prompt.buttons[4].data, chat=wa_id, query=False, channel="whatsapp"))
    assert wa.sent[-1].text == "感谢您的评价：5/5。"
    await step(h, press(h, prompt.buttons[0].data, chat=wa_id, query=False, channel="whatsapp"))
    assert wa.sent[-1].text == f"您已为工单 #{ticket.id} 评过分，谢谢！"
    assert (await h.ticket()).rating == 5
    assert not [o for o in wa.sent if o.kind == "edit_buttons"]  # WhatsApp can't edit


def test_rules_written_before_the_rating_texts_still_load(tmp_path: Path) -> None:
    old = tmp_path / "rules.yaml"
    old.write_text(
        "version: 1\ntexts:\n  languages:\n"
        "    en: {welcome: w, ack: a, resolved: r, rating_thanks: t, reopened: o}\n"
        "    zh: {welcome: w, ack: a, resolved: r, rating_thanks: t, reopened: o}\n"
        "    fr: {welcome: w, ack: a, resolved: r, rating_thanks: t, reopened: o}\n",
        encoding="utf-8",
    )
    texts = load_rules(old).texts
    assert (
        texts.for_language("en").rating_already == "You already rated ticket #{ticket}, thank you."
    )
    assert texts.for_language("zh").rating_already == "您已为工单 #{ticket} 评过分，谢谢！"
    assert texts.for_language("fr").rating_expired.startswith("That rating request")
    assert RULES.texts.for_language("zh").rating_expired == "工单 #{ticket} 的这次评分已失效。"


# -- item 6: a reply claims out loud ------------------------------------------------------------


async def test_a_reply_on_an_unclaimed_ticket_says_who_claimed_it(desk: Harness) -> None:
    await step(desk, desk.customer("hello?"))
    ticket = await desk.ticket()
    await step(desk, desk.agent(ticket, "U0BOB", "note: checking the courier first"))
    assert (await desk.ticket()).assignee_id is None  # a note claims nothing
    await step(desk, desk.agent(ticket, "U0BOB", "Hi Ann, on it"))
    thread = [o.text for o in desk.slack.sent if o.kind == "slack_thread"]
    assert thread.count("🙋 <@U0BOB> claimed this ticket.") == 1
    assert "<@U0BOB>" in state_of(last_card(desk))
    await step(desk, desk.agent(ticket, "U0BOB", "Found it"))
    thread = [o.text for o in desk.slack.sent if o.kind == "slack_thread"]
    assert thread.count("🙋 <@U0BOB> claimed this ticket.") == 1  # once, when it happened


# -- item 7: decisions in the log, bodies never -------------------------------------------------


async def test_every_decision_is_logged_by_name_and_no_message_body_is(
    desk: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bodies = ("XYZZY parcel", "PLUGH reply", "FROBOZZ outage", "GRUE hello")
    await step(desk, desk.customer("XYZZY parcel is lost"))
    ticket = await desk.ticket()
    await step(desk, desk.action(ticket, "claim", "U0ALICE"))
    await step(desk, desk.agent(ticket, "U0ALICE", "PLUGH reply from Alice"))
    await step(desk, desk.action(ticket, "resolve", "U0ALICE"))
    await step(desk, press(desk, rating_prompt(desk).buttons[3].data))
    await step(desk, press(desk, rating_prompt(desk).buttons[0].data))
    await step(desk, desk.customer("FROBOZZ outage, everything is down"))
    await step(desk, desk.customer("GRUE hello", chat="43"))
    other = await desk.ticket()
    await step(desk, desk.agent(other, "U0BOB", "PLUGH reply to the second"))

    lines = [r.getMessage() for r in caplog.records if r.name == "deskbot.tickets"]
    t, o = ticket.id, other.id
    for expected in (
        f"tickets.created ticket={t} channel=telegram priority=normal",
        f"tickets.assigned ticket={t} agent=U0ALICE reason=claimed",
        f"tickets.reply_relayed ticket={t} agent=U0ALICE",
        f"tickets.resolved ticket={t} by=U0ALICE",
        f"tickets.rated ticket={t} rating=4",
        f"tickets.rating_ignored ticket={t} reason=already",
        f"tickets.reopened ticket={t} by=customer",
        f"tickets.priority_raised ticket={t} from=normal to=urgent",
        f"tickets.assigned ticket={o} agent=U0BOB reason=replied",
    ):
        assert expected in lines, f"{expected!r} not logged; got {lines}"
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "deskbot.tickets")
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            said = record.getMessage()
            assert not any(body.split()[0] in said for body in bodies), said


async def test_a_step_that_rolls_back_logs_no_decision(
    desk: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("outbox down")

    monkeypatch.setattr(desk.dispatcher, "_queue", broken)
    await desk.inbox.accept([desk.customer("hello")], {})
    await desk.dispatcher.run_once()
    assert not [r for r in caplog.records if r.getMessage().startswith("tickets.")]


# -- item 10: what a customer wrote is shown as they wrote it -----------------------------------

TRICKY = "*not bold* <@U0ALICE> & <https://evil.example|click> _x_"


def rich_text_of(out: Outbound) -> list[dict[str, Any]]:
    (block,) = [b for b in out.blocks if b["type"] == "rich_text"]
    return [part for element in block["elements"] for part in element["elements"]]


async def test_customer_text_reaches_slack_verbatim(desk: Harness) -> None:
    await step(desk, desk.customer(TRICKY))
    card = last_card(desk)
    message = next(b for b in card.blocks if b.get("block_id") == "message")
    assert message["type"] == "rich_text"
    assert message["elements"][0] == {
        "type": "rich_text_quote",
        "elements": [{"type": "text", "text": TRICKY}],
    }
    assert "<@U0ALICE>" not in card.text and "&lt;@U0ALICE&gt;" in card.text

    await step(desk, desk.customer(f"again: {TRICKY}"))
    post = [o for o in desk.slack.sent if o.kind == "slack_thread"][-1]
    assert rich_text_of(post) == [
        {"type": "text", "text": "Ann: ", "style": {"bold": True}},
        {"type": "text", "text": f"again: {TRICKY}"},
    ]
    assert "<@U0ALICE>" not in post.text and "&lt;@U0ALICE&gt;" in post.text  # the fallback

    async with desk.sessions() as s:
        mid = await s.scalar(
            select(Message.platform_message_id).where(Message.direction == "in").limit(1)
        )
    assert mid is not None
    edit = CustomerEdit(
        channel="telegram",
        external_id="edit1",
        conversation="telegram:42",
        sender=Sender(external_id="42", name="Ann"),
        chat_id="42",
        platform_message_id=mid,
        text=f"edited {TRICKY}",
    )
    await step(desk, edit)
    post = [o for o in desk.slack.sent if o.kind == "slack_thread"][-1]
    assert {"type": "text", "text": f"edited {TRICKY}"} in rich_text_of(post)
    assert post.text.startswith("✏️ The customer edited a message. Now: edited")
    assert "<@U0ALICE>" not in post.text


async def test_a_very_long_message_is_clipped_in_its_rich_text(engine: AsyncEngine) -> None:
    h = make_harness(engine)
    await step(h, h.customer("x" * 5000))
    await step(h, h.customer("y" * 5000))
    post = [o for o in h.slack.sent if o.kind == "slack_thread"][-1]
    text = rich_text_of(post)[-1]["text"]
    assert len(text) == 2900 and text.endswith("…")


async def test_automatic_assignment_and_availability_are_logged_too(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rules = parse_rules(
        {
            "version": 1,
            "teams": {"support": {"channel": "C0SUPPORT", "agents": ["U0BOB"], "capacity": 3}},
        }
    )
    h = make_harness(engine, rules)
    available = SlashCommand(
        external_id="command:1",
        conversation="slack:C0SUPPORT:commands",
        command="/desk",
        text="available",
        user_id="U0BOB",
        slack_channel="C0SUPPORT",
    )
    await step(h, available)
    await step(h, h.customer("QUUX my parcel"))
    ticket = await h.ticket()
    assert ticket.assignee_id == "U0BOB"
    lines = [r.getMessage() for r in caplog.records if r.name == "deskbot.tickets"]
    assert "agents.available agent=U0BOB" in lines
    assert f"tickets.assigned ticket={ticket.id} agent=U0BOB reason=auto" in lines
    assert not [r for r in caplog.records if "QUUX" in r.getMessage()]
