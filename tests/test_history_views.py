"""The History modal and the Reply modal within Slack's limits, and the card's one-line story."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bot import wiring
from bot.workspace.composer import reply_view
from bot.workspace.history import MAX_LISTED, history_view, ordinal, story_line
from storage.db import session_factory
from storage.models import Customer, Identity, Ticket

from .e2e.conftest import RULES

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _ticket(n: int, customer: int, **kw: Any) -> Ticket:
    base: dict[str, Any] = {
        "customer_id": customer,
        "channel": "telegram",
        "chat_id": "42",
        "status": "closed",
        "priority": "normal",
        "team": "support",
        "slack_channel": "C0SUPPORT",
        "slack_ts": f"1700000000.{n:06d}",
        "subject": "x" * 500,
        "created_at": NOW - timedelta(days=400 - n),
        "updated_at": NOW,
    }
    return Ticket(**{**base, **kw})


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th",
    ]  # fmt: skip


async def test_a_long_history_fits_a_modal_and_says_what_is_left_out(engine: AsyncEngine) -> None:
    async with session_factory(engine).begin() as s:
        customer = Customer(name="Ann *bold* <@U0BOB>", language="es", created_at=NOW)
        s.add(customer)
        await s.flush()
        s.add(
            Identity(
                customer_id=customer.id,
                channel="telegram",
                external_id="42",
                chat_id="42",
                username="ann",
            )
        )
        s.add(
            Identity(
                customer_id=customer.id,
                channel="whatsapp",
                external_id="4477",
                chat_id="4477",
                phone="+4477",
                blocked=True,
            )
        )
        for n in range(1, 201):
            s.add(_ticket(n, customer.id, rating=n % 5 + 1))
        s.add(_ticket(201, customer.id, status="open", created_at=NOW - timedelta(days=2)))
        s.add(_ticket(202, customer.id, status="open", channel="whatsapp", created_at=NOW))
    async with session_factory(engine)() as s:
        latest = await s.get_one(Ticket, 202)
        view = await history_view(s, latest, "acme")
        story = await story_line(s, latest)
    blocks = view["blocks"]
    text = json.dumps(blocks, ensure_ascii=False)
    assert len(blocks) <= 100 and all(
        len(b.get("text", {}).get("text", "")) <= 3000 for b in blocks
    )
    assert "*Tickets* (202, newest first)" in text
    assert f"… and {202 - MAX_LISTED} older tickets" in text
    assert "<https://acme.slack.com/archives/C0SUPPORT/p1700000000000202|#202>" in text
    assert "← this one" in text and "rated " in text
    assert "• WhatsApp +4477 · ⚠️ blocked the bot" in text and "• Telegram @ann" in text
    assert "&lt;@U0BOB&gt;" in text  # no mention from a name
    assert view["submit"]["text"] == "Save note" and len(view["title"]["text"]) <= 24
    assert (
        story == "2nd ticket in 30 days · last rating 1/5 · also on Telegram"
    )  # #200: 200 % 5 + 1


async def test_the_reply_modal_previews_exactly_what_the_customer_gets(engine: AsyncEngine) -> None:
    async with session_factory(engine).begin() as s:
        customer = Customer(name="Ana", language="es", created_at=NOW)
        s.add(customer)
        await s.flush()
        s.add(
            _ticket(
                1,
                customer.id,
                status="open",
                assignee_id="U0BOB",
                assignee_name="Bob",
                language="es",
            )
        )
    rules = RULES.model_copy(
        update={"texts": RULES.texts.model_copy(update={"show_agent_name": True})}
    )
    async with session_factory(engine)() as s:
        ticket = await s.get_one(Ticket, 1)
        desk = wiring.desks(rules)(s, NOW)
        view = reply_view(
            desk, ticket, customer, text="Hola ``` <b>", macro="Refund on its way", revision="a1"
        )
        ticket.assignee_id = ticket.assignee_name = None  # sending will make Alice its assignee
        unassigned = reply_view(
            desk, ticket, customer, text=" Hola ", macro=None, revision="0", agent_name="Alice"
        )
    shown = next(b for b in unassigned["blocks"] if b.get("block_id") == "preview")
    assert shown["text"]["text"].endswith("```Alice: Hola```")
    text = json.dumps(view, ensure_ascii=False)
    assert len(view["title"]["text"]) <= 24 and view["submit"]["text"] == "Send"
    assert "language *es*" in text
    # The preview is what the customer reads: with the agent's name, as show_agent_name says.
    preview = next(b for b in view["blocks"] if b.get("block_id") == "preview")["text"]["text"]
    assert preview == "*The customer will get exactly:*\n```Bob: Hola ʼʼʼ &lt;b&gt;```"
    box = next(b for b in view["blocks"] if b["type"] == "input")
    assert box["block_id"] == "reply_text.a1" and box["element"]["initial_value"] == "Hola ``` <b>"
    picker = next(b for b in view["blocks"] if b.get("block_id") == "macro")["elements"][0]
    assert picker["initial_option"]["value"] == "Refund on its way"
    assert "On send: status pending · tags refund" in text
