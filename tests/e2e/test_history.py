"""The customer's whole story over real HTTP: the card's one-line summary, and the History
modal (identities, language, every ticket across channels with its rating and card link, and
the agents' note, saved from the modal)."""

from __future__ import annotations

import json

from sqlalchemy import select

from storage.models import AuditEntry, Customer

from .conftest import SUPPORT, Stack, eventually

WA = "447700900123"


async def modal_shows(stack: Stack, user: str, *needles: str) -> tuple[str, str]:
    slack = stack.standins.slack

    async def probe() -> tuple[str, str] | None:
        modal = slack.modal_of(user)
        if modal is None:
            return None
        text = slack.modal_text(modal["id"])
        return (modal["id"], text) if all(n in text for n in needles) else None

    return await eventually(probe, f"{needles!r} in {user}'s modal")


async def test_the_story_on_the_card_and_in_the_history_modal(stack: Stack) -> None:
    tg, wa, slack = stack.standins.telegram, stack.standins.whatsapp, stack.standins.slack
    # A first ticket on WhatsApp, resolved and rated 2/5.
    await wa.customer_says(WA, "My parcel is late", name="Lee")
    first = await stack.card()
    assert "🧾" not in json.dumps(first["blocks"], ensure_ascii=False)  # nothing to tell yet
    await slack.agent_clicks(SUPPORT, first["ts"], "ticket_resolve", "U0ALICE")
    closing = (await wa.wait_for_sent(WA, 2))[1]
    rows = closing["interactive"]["action"]["sections"][0]["rows"]
    await wa.customer_presses(WA, rows[1]["id"], rows[1]["title"])
    await wa.wait_for_sent(WA, 3)
    # The same person on Telegram, linked by their verified number, writes again.
    await tg.customer_says(55, "/link", first_name="Lee")
    await tg.wait_for_sent(55, 1)
    await tg.customer_shares_contact(55, WA, first_name="Lee")
    await tg.wait_for_sent(55, 2)
    await tg.customer_says(55, "Still nothing arrived", first_name="Lee")
    second = await stack.card(2)
    story = "🧾 2nd ticket in 30 days · last rating 2/5 · also on WhatsApp"
    assert story in json.dumps(second["blocks"], ensure_ascii=False)

    # History: the modal opens at once, then shows the whole story.
    await slack.agent_clicks(second["channel"], second["ts"], "ticket_history", "U0BOB")
    archives = f"https://sandbox.slack.com/archives/{first['channel']}/p"
    view_id, text = await modal_shows(
        stack, "U0BOB", "*Lee* · customer c1", "• WhatsApp", "• Telegram", "*Tickets* (2"
    )
    assert f"<{archives}{first['ts'].replace('.', '')}|#1>" in text
    assert "rated 2/5" in text and "← this one" in text and "_Still nothing arrived_" in text

    # The note: typed in the modal, saved with its submit button, shown the next time.
    await slack.types_in_modal(view_id, "Prefers WhatsApp. Second late parcel this month.")
    status, body = await slack.submits_modal(view_id)
    assert (status, body.strip()) == (200, "")
    await stack.thread_has(second["ts"], "🗒️ <@U0BOB> updated the note about this customer.")
    async with stack.sessions() as s:
        customer = await s.get(Customer, 1)
        assert customer is not None
        assert customer.note == "Prefers WhatsApp. Second late parcel this month."
        audit = await s.scalar(select(AuditEntry).where(AuditEntry.action == "customer-note"))
        assert audit is not None and (audit.actor, audit.target) == ("U0BOB", "customer c1")
        # Opening History (the customer's tickets across channels) is audited with who asked.
        read = (await s.scalars(select(AuditEntry).where(AuditEntry.action == "history"))).all()
        assert [(e.actor, e.target, e.detail["ticket"]) for e in read] == [
            ("U0BOB", "customer c1", 2)
        ]
    await slack.agent_clicks(second["channel"], second["ts"], "ticket_history", "U0CAROL")
    await modal_shows(stack, "U0CAROL", "Prefers WhatsApp. Second late parcel this month.")


async def test_someone_outside_the_team_cannot_change_the_note(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(56, "My parcel never came", first_name="Ann")
    card = await stack.card()
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_history", "U0DAN")  # billing only
    view_id, _ = await modal_shows(stack, "U0DAN", "*Tickets* (1")
    await slack.types_in_modal(view_id, "rude customer")
    await slack.submits_modal(view_id)
    await stack.thread_has(card["ts"], "⚠️ <@U0DAN>: you are not an agent of team *support*")
    # Bob (support) saves a note afterwards: Dan's never landed.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_history", "U0BOB")
    bob_view, _ = await modal_shows(stack, "U0BOB", "*Tickets* (1")
    await slack.types_in_modal(bob_view, "Asked twice already")
    await slack.submits_modal(bob_view)
    await stack.thread_has(card["ts"], "🗒️ <@U0BOB> updated the note")
    async with stack.sessions() as s:
        customer = await s.get(Customer, 1)
        assert customer is not None and customer.note == "Asked twice already"
        actors = list(
            (
                await s.scalars(
                    select(AuditEntry.actor).where(AuditEntry.action == "customer-note")
                )
            ).all()
        )
    assert actors == ["U0BOB"]
