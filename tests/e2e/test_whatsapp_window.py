"""WhatsApp beyond 24 hours, end to end against the Cloud API stand-in (which enforces the
window on its clock and checks templates as Meta does): replies outside the window are held
and announced by template, and delivered once, in order, when the customer writes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.base.clock import OffsetClock
from bot.commands.sandbox import approve_templates
from storage.models import Identity, OutboxRow

from .conftest import RULES, SUPPORT, Stack, eventually, running_stack

WA = "15551230042"
BOB = "U0BOB"
# Without SLA clocks: hours pass in these tests, and escalations would reassign the ticket.
QUIET = RULES.model_copy(update={"sla": None})


@pytest.fixture
async def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture
async def wstack(database_url: str, clock: OffsetClock) -> AsyncIterator[Stack]:
    """A desk and a WhatsApp whose clocks move together (the sandbox's fast-forward), with the
    templates of rules.yaml approved."""
    async with running_stack(database_url, clock=clock, rules=QUIET) as stack:
        stack.standins.whatsapp.clock = lambda: clock.now().timestamp()
        approve_templates(stack.standins, RULES)
        yield stack


def texts(stack: Stack) -> list[str]:
    """What the customer's WhatsApp shows, in order: texts, and templates as rendered."""
    shown = []
    for m in stack.standins.whatsapp.sent_to(WA):
        if m.get("type") == "template":
            shown.append("TEMPLATE " + str(m.get("rendered")))
        elif m.get("type") == "interactive":
            shown.append(m["interactive"]["body"]["text"])
        else:
            shown.append(m.get("text", {}).get("body", f"[{m.get('type')}]"))
    return shown


async def sent(stack: Stack, n: int) -> list[str]:
    await stack.standins.whatsapp.wait_for_sent(WA, n)
    return texts(stack)


async def claimed_card(stack: Stack, text: str = "My parcel is lost") -> dict[str, Any]:
    await stack.standins.whatsapp.customer_says(WA, text, name="Ana")
    card = await stack.card()
    await stack.standins.slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", BOB)
    await sent(stack, 1)  # the acknowledgement
    return card


async def test_a_reply_inside_the_window_goes_as_written(wstack: Stack, clock: OffsetClock) -> None:
    card = await claimed_card(wstack)
    clock.advance(hours=23)
    await wstack.standins.slack.agent_replies(SUPPORT, card["ts"], BOB, "Found it, it ships today")
    shown = await sent(wstack, 2)
    assert shown[1] == "Found it, it ships today"
    await wstack.outbox_idle()
    assert not any(m.get("type") == "template" for m in wstack.standins.whatsapp.sent_to(WA))
    # The card says until when replies go as written.
    card_now = wstack.cards()[0]
    assert "WhatsApp window open until" in json.dumps(card_now["blocks"])


async def test_after_25_hours_the_template_goes_and_the_reply_waits_for_the_customer(
    wstack: Stack, clock: OffsetClock
) -> None:
    card = await claimed_card(wstack)
    clock.advance(hours=25)
    await wstack.standins.slack.agent_replies(SUPPORT, card["ts"], BOB, "Found it, ships today")
    await wstack.standins.slack.agent_replies(SUPPORT, card["ts"], BOB, "Tracking: 123")
    shown = await sent(wstack, 2)
    assert shown[1] == (
        "TEMPLATE We have an update on your ticket #1. Reply to this message to read it."
    )
    template = wstack.standins.whatsapp.sent_to(WA)[1]["template"]
    assert template["name"] == "ticket_update" and template["language"]["code"] == "en_US"
    await wstack.thread_has(card["ts"], "sent as template *ticket_update*")
    await wstack.thread_has(card["ts"], "This reply waits too")
    await wstack.outbox_idle()
    assert len(wstack.standins.whatsapp.sent_to(WA)) == 2  # one template for both replies
    async with wstack.sessions() as s:
        held = (await s.scalars(select(OutboxRow).where(OutboxRow.status == "held"))).all()
    assert len(held) == 2
    card_now = wstack.cards()[0]
    assert "2 replies waiting" in json.dumps(card_now["blocks"])

    # The customer answers the template: both replies arrive, once, in the order written.
    await wstack.standins.whatsapp.customer_says(WA, "ok, what is it?")
    shown = await sent(wstack, 4)
    assert shown[2:] == ["Found it, ships today", "Tracking: 123"]
    await wstack.thread_has(card["ts"], "delivering the 2 replies that waited")
    await wstack.outbox_idle()
    assert texts(wstack)[2:] == ["Found it, ships today", "Tracking: 123"]
    async with wstack.sessions() as s:
        statuses = (await s.scalars(select(OutboxRow.status))).all()
        ident = await s.scalar(select(Identity).where(Identity.chat_id == WA))
    assert "held" not in statuses
    assert ident is not None and ident.last_inbound_at is not None


@pytest.mark.parametrize("refused", ["on the send", "in a status webhook"])
async def test_131047_on_a_send_the_desk_thought_open_leads_to_the_template(
    wstack: Stack, clock: OffsetClock, refused: str
) -> None:
    card = await claimed_card(wstack)
    wa = wstack.standins.whatsapp
    wa.window_refused_on_send = refused == "on the send"
    # WhatsApp's clock is 25 h ahead of the desk's: the desk believes the window is open.
    wa.clock = lambda: clock.now().timestamp() + 25 * 3600
    await wstack.standins.slack.agent_replies(SUPPORT, card["ts"], BOB, "Here is your answer")
    await wstack.thread_has(card["ts"], "sent as template *ticket_update*")
    shown = await sent(wstack, 2 if refused == "on the send" else 3)
    assert shown[-1].startswith("TEMPLATE We have an update on your ticket #1")
    await wstack.outbox_idle()
    async with wstack.sessions() as s:
        row = await s.scalar(select(OutboxRow).where(OutboxRow.status == "held"))
    assert row is not None and row.payload["text"] == "Here is your answer"
    await wa.customer_says(WA, "yes?")
    shown = await eventually(
        _async(lambda: texts(wstack) if "Here is your answer" in texts(wstack)[-1:] else None),
        "the held reply",
    )
    assert (
        shown.count(
            "TEMPLATE We have an update on your ticket #1. Reply to this message to read it."
        )
        == 1
    )


async def test_an_unknown_template_is_reported_not_retried(
    wstack: Stack, clock: OffsetClock
) -> None:
    wstack.standins.whatsapp.templates.clear()  # nothing approved in WhatsApp Manager
    card = await claimed_card(wstack)
    clock.advance(hours=25)
    await wstack.standins.slack.agent_replies(SUPPORT, card["ts"], BOB, "Answer")
    await wstack.thread_has(card["ts"], "WhatsApp refused the template *ticket_update*")
    await wstack.outbox_idle()
    async with wstack.sessions() as s:
        row = await s.scalar(
            select(OutboxRow).where(OutboxRow.status == "failed", OutboxRow.channel == "whatsapp")
        )
        assert row is not None and row.attempts == 1
        assert row.last_error is not None and "132001" in row.last_error
    port = wstack.desk.settings.http_port
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as resp,
    ):
        health = await resp.json()
    assert "132001" in health["whatsapp_templates"]["ticket_update (en_US)"]
    # The reply still waits for the customer, and reaches them when they write.
    await wstack.standins.whatsapp.customer_says(WA, "hello?")
    shown = await sent(wstack, 2)
    assert shown[-1] == "Answer"


async def test_without_a_template_the_thread_says_the_customer_cannot_be_reached(
    database_url: str, clock: OffsetClock
) -> None:
    rules = QUIET.model_copy(
        update={"whatsapp": RULES.whatsapp.model_copy(update={"templates": {}})}
    )
    async with running_stack(database_url, clock=clock, rules=rules) as stack:
        stack.standins.whatsapp.clock = lambda: clock.now().timestamp()
        card = await claimed_card(stack)
        clock.advance(hours=30)
        await stack.standins.slack.agent_replies(SUPPORT, card["ts"], BOB, "Answer")
        await stack.thread_has(card["ts"], "The customer can't be reached until they write")
        await stack.outbox_idle()
        assert len(stack.standins.whatsapp.sent_to(WA)) == 1  # the acknowledgement only
        assert "can't be reached until they write" in json.dumps(stack.cards()[0]["blocks"])


def _async(probe: Any) -> Any:
    async def run() -> Any:
        return probe()

    return run
