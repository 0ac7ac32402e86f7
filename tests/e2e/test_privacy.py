"""A customer's data on request: exported as JSON to the supervisor who asked, and forgotten
(after a confirmation) so that no table and no card the desk posted still names or quotes them,
while the reports keep counting their ticket."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
from sqlalchemy import select, text

from bot.customers.privacy import ERASED
from storage.models import AuditEntry, Base

from .conftest import SUPPORT, Stack, eventually

SECRETS = ("Annabel", "Elm Street", "7700 900123")


async def everything_stored(stack: Stack) -> str:
    """Every row of every table, as text."""
    dump: list[str] = []
    async with stack.sessions() as s:
        for table in Base.metadata.sorted_tables:
            rows = (await s.execute(text(f'SELECT * FROM "{table.name}"'))).all()
            dump += [f"{table.name}: {tuple(row)!r}" for row in rows]
    return "\n".join(dump)


async def ask(stack: Stack, words: str, user: str) -> dict[str, Any]:
    answers = await stack.standins.slack.slash_command("/desk", words, user, SUPPORT)
    return [a for a in answers if "text" in a][-1]


async def exported(stack: Stack, ticket: str, user: str) -> dict[str, Any]:
    """``/desk customer-export TICKET`` as ``user``: the JSON file the desk puts in their DM."""
    slack = stack.standins.slack
    told = await ask(stack, f"customer-export {ticket}", user)
    assert told["text"].startswith("Exporting customer c1 (1 ticket)")
    dm = slack.dm_channel(user)

    async def in_dm() -> list[dict[str, Any]]:
        return [m for m in slack.messages(dm) if m.get("files")]

    (shared,) = (await eventually(in_dm, f"the JSON in {user}'s DM"))[0]["files"]
    return dict(json.loads(slack.files[shared["id"]]["content"]))


async def test_a_customer_is_exported_then_forgotten_everywhere_but_in_the_counts(
    stack: Stack,
) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(81, "Deliver to 5 Elm Street, call +44 7700 900123", "Annabel")
    card = await stack.card()
    await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "We will call you today.")
    await tg.wait_for_sent(81, 2)
    await tg.customer_says(81, "Thanks, Annabel here again", "Annabel")
    await stack.thread_has(card["ts"], "Annabel here again")
    # An agent's note about her (the History modal, on the card while the ticket is open) is
    # hers too: exported, then erased.
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_history", "U0BOB")

    async def history() -> str | None:
        modal = slack.modal_of("U0BOB")
        return modal["id"] if modal and modal.get("submit") else None

    view_id = await eventually(history, "the History modal")
    await slack.types_in_modal(view_id, "Deliveries to 5 Elm Street only")
    await slack.submits_modal(view_id)
    await stack.thread_has(card["ts"], "updated the note about this customer")
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_resolve", "U0BOB")
    prompt = (await tg.wait_for_sent(81, 3))[2]
    keys = [b["callback_data"] for row in prompt["reply_markup"]["inline_keyboard"] for b in row]
    await tg.customer_presses(81, prompt["message_id"], keys[3])
    await tg.wait_for_sent(81, 4)
    before = await everything_stored(stack)
    assert all(secret in before for secret in SECRETS)

    # The export: everything, to the supervisor's DM and nowhere else.
    data = await exported(stack, "#1", "U0CAROL")
    assert data["customer"]["name"] == "Annabel"
    assert data["customer"]["note"] == "Deliveries to 5 Elm Street only"
    assert data["identities"][0]["chat_id"] == "81"
    said = [m["text"] for m in data["tickets"][0]["messages"] if m["direction"] == "in"]
    assert said == ["Deliver to 5 Elm Street, call +44 7700 900123", "Thanks, Annabel here again"]
    assert data["tickets"][0]["rating"] == 4 and data["platform_payloads"]

    # Forgetting: admins only; a confirmation first, and "Keep" changes nothing.
    refused = await ask(stack, "forget 1", "U0BOB")
    assert refused["text"].startswith("`/desk forget` is for admins only; nothing was done.")
    asked = await ask(stack, "forget 1", "U0CAROL")
    assert asked["text"].startswith(
        "*Forget customer c1?* (ticket #1) This erases their name, platform ids and phone"
        " numbers (1 identity), the text and files of 4 messages in 1 ticket, and "
    )
    assert re.search(r"ticket, and [2-9]\d* raw platform payloads; their cards", asked["text"])
    assert "1 message agents wrote in the threads stays: Slack lets" in asked["text"]
    kept = await slack.clicks_in_answer(SUPPORT, asked, "desk_forget", "U0CAROL", confirm=False)
    assert kept == [] and "Elm Street" in await everything_stored(stack)
    done = await slack.clicks_in_answer(SUPPORT, asked, "desk_forget", "U0CAROL")
    assert done[-1]["text"].startswith(
        "Customer c1 is forgotten: 1 identity, 4 messages in 1 ticket"
    )

    stored = await everything_stored(stack)
    for secret in SECRETS:
        assert secret not in stored, [line for line in stored.splitlines() if secret in line]
    assert "'81'" not in stored  # the Telegram chat id is gone too

    # Slack: the card is redrawn without name or words, the desk's posts in the thread say
    # they were erased; Bob's own message stays (only its author can delete it).
    async def redacted() -> bool:
        shown = json.dumps(slack.messages(SUPPORT)[0]) + json.dumps(
            slack.thread(SUPPORT, card["ts"])
        )
        return "Annabel" not in shown and "Elm Street" not in shown

    await eventually(redacted, "the card and the thread redacted")
    thread = [m["text"] for m in slack.thread(SUPPORT, card["ts"])]
    assert ERASED in thread and "We will call you today." in thread
    assert "Forgotten customer" in json.dumps(slack.messages(SUPPORT)[0]["blocks"])

    # The reports still count the ticket and its rating; the trail says who erased whom.
    stats = await ask(stack, "stats today", "U0CAROL")
    assert "tickets created 1 · resolutions 1" in stats["text"]
    assert "CSAT 100.0% (n=1" in stats["text"]
    async with stack.sessions() as s:
        trail = (await s.scalars(select(AuditEntry).order_by(AuditEntry.id))).all()
    assert [(e.actor, e.action, e.target) for e in trail] == [
        ("U0BOB", "history", "customer c1"),  # who read the customer's story
        ("U0BOB", "customer-note", "customer c1"),
        ("U0CAROL", "customer-export", "customer c1"),
        ("U0BOB", "refused", "/desk forget"),
        ("U0CAROL", "forgot", "customer c1"),
        ("U0CAROL", "stats", "/desk stats today"),
    ]
    again = await ask(stack, "forget c1", "U0CAROL")
    assert again["text"] == "Customer c1 has already been forgotten."


async def test_the_forget_button_works_over_the_sandbox_control_api(stack: Stack) -> None:
    """What the sandbox page does when a supervisor types `/desk forget 1` and presses
    "Forget customer c1", then "Forget" in the dialog: the customer is erased."""
    tg = stack.standins.telegram
    await tg.customer_says(83, "Call me at +44 7700 900123", "Annabel")
    await stack.card()
    base = stack.standins.url
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: dict[str, Any]) -> Any:
            async with http.post(base + path, json=body) as r:
                assert r.status == 200, await r.text()
                return await r.json()

        asked = await post(
            "/control/slack/slash_command",
            {"command": "/desk", "text": "forget 1", "user": "U0CAROL", "channel": SUPPORT},
        )
        assert asked[-1]["text"].startswith("*Forget customer c1?*")
        said = await post(
            "/control/slack/answer_clicks", {"action_id": "desk_forget", "user": "U0CAROL"}
        )
    assert said[-1]["text"].startswith("Customer c1 is forgotten: 1 identity, 1 message")
    assert "7700 900123" not in await everything_stored(stack)
