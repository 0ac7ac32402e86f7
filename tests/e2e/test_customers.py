"""One customer across channels: a Telegram customer's verified number links them to the
WhatsApp customer with that number; someone else's contact never does; an agent unlinks."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from storage.models import Customer, Identity, Ticket, TicketEvent

from .conftest import SUPPORT, Stack, eventually

WA = "447700900123"


async def owners(stack: Stack) -> dict[str, int]:
    async with stack.sessions() as s:
        rows = (await s.execute(select(Identity.channel, Identity.customer_id))).all()
        return {channel: customer for channel, customer in rows}


async def ticket_owners(stack: Stack) -> list[int]:
    async with stack.sessions() as s:
        return list((await s.scalars(select(Ticket.customer_id).order_by(Ticket.id))).all())


async def test_a_verified_number_links_telegram_to_whatsapp_and_an_agent_unlinks(
    stack: Stack,
) -> None:
    tg, wa, slack = stack.standins.telegram, stack.standins.whatsapp, stack.standins.slack
    await wa.customer_says(WA, "My parcel is late", name="Lee")
    first = await stack.card()
    await tg.customer_says(55, "Any news on my parcel?", first_name="Lee")
    second = await stack.card(2)
    assert await owners(stack) == {"whatsapp": 1, "telegram": 2}

    # /link: the share-my-number button, and no ticket for it.
    await tg.customer_says(55, "/link", first_name="Lee")
    prompt = (await tg.wait_for_sent(55, 2))[1]
    assert prompt["text"].startswith("To link this chat with your WhatsApp")
    assert prompt["reply_markup"]["keyboard"] == [
        [{"text": "Share my phone number", "request_contact": True}]
    ]
    # Someone else's contact card: refused, nothing linked.
    await tg.customer_shares_contact(55, WA, own=False, first_name="Lee")
    refused = (await tg.wait_for_sent(55, 3))[2]
    assert refused["text"].startswith("Please use the button to share your own number")
    assert await owners(stack) == {"whatsapp": 1, "telegram": 2}

    # Their own number (Telegram sends it without "+"): one customer, the older one.
    await tg.customer_shares_contact(55, WA, first_name="Lee")
    linked = (await tg.wait_for_sent(55, 4))[3]
    assert linked["text"] == "Thanks! We will recognise you on WhatsApp too."
    assert linked["reply_markup"] == {"remove_keyboard": True}
    assert await owners(stack) == {"whatsapp": 1, "telegram": 1}
    assert await ticket_owners(stack) == [1, 1]
    async with stack.sessions() as s:
        assert await s.get(Customer, 2) is None
        phone = await s.scalar(select(Identity.phone).where(Identity.channel == "telegram"))
        assert phone == "+447700900123"
        events = (
            await s.execute(
                select(TicketEvent.ticket_id, TicketEvent.from_value, TicketEvent.to_value).where(
                    TicketEvent.kind == "customer"
                )
            )
        ).all()
        assert sorted(events) == [(1, "c2", "c1"), (2, "c2", "c1")]
        assert await s.scalar(select(func.count()).select_from(Ticket)) == 2  # /link made none
    for card in (first, second):
        await stack.thread_has(
            card["ts"], "🔗 This customer is one person on Telegram and WhatsApp"
        )

    # A wrong link is undone by an agent: the Telegram side is a customer of its own again.
    answers = await slack.slash_command("/desk", "unlink c1 telegram", "U0ALICE", SUPPORT)
    said = re.fullmatch(
        r"Unlinked: customer c1's telegram identity is customer c(\d+) now\.", answers[-1]["text"]
    )
    assert said is not None
    split = int(said.group(1))  # SQLite may reuse the merged customer's id; PostgreSQL not
    assert split != 1
    assert await owners(stack) == {"whatsapp": 1, "telegram": split}
    assert await ticket_owners(stack) == [1, split]
    await stack.thread_has(second["ts"], "✂️ <@U0ALICE> unlinked this customer's telegram identity")
    nothing = await slack.slash_command("/desk", "unlink c1 telegram", "U0ALICE", SUPPORT)
    assert nothing[-1]["text"] == "customer c1 has no telegram identity."

    # An agent can ask for the number from the card's side too.
    asked = await slack.slash_command("/desk", "link 2", "U0ALICE", SUPPORT)
    assert (
        asked[-1]["text"]
        == "Asked the customer of #2 to share their number with Telegram's button."
    )

    async def prompted_again() -> bool:
        return len([m for m in tg.sent_to(55) if "keyboard" in m.get("reply_markup", {})]) == 2

    await eventually(prompted_again, "the share-my-number button again")
