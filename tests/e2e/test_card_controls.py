"""The card's controls over real HTTP: priority, status, reassign, tags, Correct intent, and
the refusal of someone outside the ticket's team. Each change updates the card with new
block_ids, records who did it, and says so in the thread."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from storage.models import TicketEvent

from .conftest import SUPPORT, Stack, eventually


def _text(card: dict[str, Any]) -> str:
    return json.dumps(card["blocks"], ensure_ascii=False)


def _controls_id(card: dict[str, Any]) -> str:
    return str(next(b["block_id"] for b in card["blocks"] if b["block_id"].startswith("controls.")))


async def _card_shows(stack: Stack, needle: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        card = stack.cards()[0]
        return card if needle in _text(card) else None

    return await eventually(probe, f"{needle!r} on the card")


async def _events(stack: Stack, kind: str) -> list[TicketEvent]:
    async with stack.sessions() as s:
        rows = await s.scalars(
            select(TicketEvent).where(TicketEvent.kind == kind).order_by(TicketEvent.id)
        )
        return list(rows)


async def _new_ticket(stack: Stack) -> dict[str, Any]:
    await stack.standins.telegram.customer_says(42, "My parcel never came", first_name="Ann")
    return await stack.card()


async def test_priority_and_status_from_the_card(stack: Stack) -> None:
    slack, tg = stack.standins.slack, stack.standins.telegram
    card = await _new_ticket(stack)
    before = _controls_id(card)
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_priority", "U0ALICE", "1:urgent")
    card = await _card_shows(stack, "priority *urgent*")
    assert _controls_id(card) != before  # new block_ids: Slack's menus show the desk's state
    await stack.thread_has(card["ts"], "🎚️ *Alice* set the priority to *urgent* (was normal).")
    assert (await stack.ticket()).priority == "urgent"
    [event] = [e for e in await _events(stack, "priority") if e.actor != "desk"]
    assert (event.actor, event.from_value, event.to_value) == ("U0ALICE", "normal", "urgent")

    # Waiting on the customer: Alice works on a ticket nobody had, so it is hers.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_status", "U0ALICE", "1:pending")
    card = await _card_shows(stack, "Waiting on the customer · *Alice*")
    await stack.thread_has(card["ts"], "🔖 *Alice* set the status to *waiting on the customer*.")
    ticket = await stack.ticket()
    assert (ticket.status, ticket.assignee_id) == ("pending", "U0ALICE")

    # Resolved from the menu is the Resolve button: the customer is asked for a rating.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_status", "U0ALICE", "1:resolved")
    await _card_shows(stack, "Resolved by *Alice*")
    await stack.thread_has(card["ts"], "✅ *Alice* resolved this ticket.")
    sent = await tg.wait_for_sent(42, 2)
    assert sent[-1]["reply_markup"]["inline_keyboard"]  # the 1–5 rating
    assert "ticket_status" not in _text(stack.cards()[0])  # a resolved card has no controls


async def test_reassign_within_the_team_and_not_outside_it(stack: Stack) -> None:
    slack = stack.standins.slack
    card = await _new_ticket(stack)
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_reassign", "U0ALICE", "U0BOB")
    card = await _card_shows(stack, "Assigned to *Bob*")
    await stack.thread_has(card["ts"], "👤 *Alice* gave this ticket to *Bob*.")
    ticket = await stack.ticket()
    assert (ticket.assignee_id, ticket.assignee_name, ticket.status) == ("U0BOB", "Bob", "open")
    [event] = await _events(stack, "assignee")
    assert (event.actor, event.from_value, event.to_value) == ("U0ALICE", None, "U0BOB")

    # Dan is in billing, not support: the desk says so to Alice alone and changes nothing.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_reassign", "U0ALICE", "U0DAN")

    async def told() -> list[str]:
        return slack.ephemerals("U0ALICE")

    said = await eventually(told, "an ephemeral answer to Alice")
    assert said == ["*Dan* is not an agent of team *support*, so this changes nothing."]
    assert (await stack.ticket()).assignee_id == "U0BOB"
    assert len(await _events(stack, "assignee")) == 1


async def test_tags_and_the_corrected_intent_are_kept(stack: Stack) -> None:
    slack = stack.standins.slack
    card = await _new_ticket(stack)
    await slack.agent_clicks(
        SUPPORT, card["ts"], "ticket_tags", "U0BOB", values=["1:delivery", "1:vip"]
    )
    card = await _card_shows(stack, "🏷️ delivery, vip")
    await stack.thread_has(card["ts"], "🏷️ *Bob* set the tags: delivery, vip.")
    tags = next(
        e
        for b in card["blocks"]
        for e in b.get("elements", [])
        if e.get("action_id") == "ticket_tags"
    )
    assert [o["value"] for o in tags["initial_options"]] == ["1:delivery", "1:vip"]
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_tags", "U0BOB", values=[])
    await stack.thread_has(card["ts"], "🏷️ *Bob* removed the tags.")
    assert [e.to_value for e in await _events(stack, "tags")] == ['["delivery", "vip"]', "[]"]

    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_intent", "U0CAROL", "1:track_refund")
    await _card_shows(stack, "intent corrected to *track_refund*")
    await stack.thread_has(card["ts"], "🧠 *Carol* corrected the intent to *track_refund*")
    [label] = await _events(stack, "intent")
    assert (label.actor, label.to_value) == ("U0CAROL", "track_refund")


async def test_someone_outside_the_team_changes_nothing(stack: Stack) -> None:
    slack = stack.standins.slack
    card = await _new_ticket(stack)
    before = _controls_id(card)
    # Dan is an agent of billing only; the ticket is support's.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_priority", "U0DAN", "1:low")
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_tags", "U0DAN", values=["1:bug"])

    async def told() -> list[str] | None:
        said = slack.ephemerals("U0DAN")
        return said if len(said) == 2 else None

    said = await eventually(told, "two ephemeral refusals to Dan")
    assert said == ["🚫 You are not an agent of team *support*, so this changes nothing."] * 2
    assert slack.ephemerals("U0ALICE") == []  # nobody else sees it

    async def reset() -> bool:  # the card is redrawn, so Dan's menu shows the real priority
        return _controls_id(stack.cards()[0]) != before

    await eventually(reset, "the card's menus reset")
    ticket = await stack.ticket()
    assert ticket.priority == "normal"
    assert [e.actor for e in await _events(stack, "priority")] == ["desk"]  # its creation
    assert await _events(stack, "tags") == []
    assert not [m for m in slack.thread(SUPPORT, card["ts"]) if "U0DAN" in m["text"]]
    # Carol leads support and vip and is a supervisor: she may act on any ticket.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_priority", "U0CAROL", "1:high")
    await _card_shows(stack, "priority *high*")
