"""Encryption at rest (issue 26, point 2): with DESK_DATA_KEY the database and its dumps hold
none of a customer's words, name or number, while the desk works as before (linking by a
verified number, /desk stats, exports, forget); a key rotation under load loses nothing."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import Text, cast, func, select
from sqlalchemy.engine import make_url

from bot.commands.keys import remaining, rotate, sealed_columns
from storage import crypto
from storage.crypto import Keyring
from storage.db import create_engine, session_factory
from storage.models import Customer, EmailThread, Identity, Message, Ticket

from . import test_customers, test_stats, test_stats_uploads
from .conftest import SUPPORT, Stack, eventually, running_stack
from .mailservers import Dovecot
from .test_email import CUSTOMER, email_stack, mail
from .test_email import dovecot as dovecot  # the fixture: a Dovecot server for the module
from .test_privacy import ask, exported

KEY = crypto.new_key()
OLD = crypto.new_key()
SECRETS = ("Annabel", "Elm Street", "7700 900123", "447700900123", "Deliveries to")
WA_LOAD = "447700900456"  # a WhatsApp customer writing during the rotation
WA_DUMP = "447700900789"


@pytest.fixture(autouse=True)
def no_keyring_after() -> Iterator[None]:
    yield
    crypto.install(None)  # the next test's desk, without a key, stores in clear


@pytest.fixture
async def keyed(database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(database_url, data_keys=Keyring.of(KEY)) as running:
        yield running


def dump(database_url: str) -> str:
    """The database as a backup holds it: ``sqlite3 .dump`` or ``pg_dump`` of the schema."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(str(url.database)) as conn:
            return "\n".join(conn.iterdump())
    schema = str(url.query["search_path"])
    args = ["pg_dump", "-h", url.host or "127.0.0.1", "-U", url.username or "postgres"]
    if url.port:
        args += ["-p", str(url.port)]
    out = subprocess.run(
        [*args, "-n", schema, str(url.database)], capture_output=True, text=True, check=True
    )
    return out.stdout


async def test_with_a_key_a_dump_holds_no_words_names_or_numbers_and_forget_still_erases(
    keyed: Stack,
) -> None:
    stack = keyed
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(81, "Deliver to 5 Elm Street, call +44 7700 900123", "Annabel")
    card = await stack.card()
    await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "We will call you today.")
    await tg.wait_for_sent(81, 2)
    await tg.customer_shares_contact(81, "447700900123", first_name="Annabel")
    await tg.wait_for_sent(81, 3)
    await slack.agent_clicks(SUPPORT, card["ts"], "ticket_history", "U0BOB")

    async def history() -> str | None:
        modal = slack.modal_of("U0BOB")
        return modal["id"] if modal and modal.get("submit") else None

    view_id = await eventually(history, "the History modal")
    await slack.types_in_modal(view_id, "Deliveries to 5 Elm Street only")
    await slack.submits_modal(view_id)
    await stack.thread_has(card["ts"], "updated the note about this customer")
    # The export to a supervisor's DM (its JSON is an outbox payload) and the figures.
    data = await exported(stack, "#1", "U0CAROL")
    assert data["customer"]["name"] == "Annabel"
    assert data["customer"]["note"] == "Deliveries to 5 Elm Street only"
    stats = await ask(stack, "stats today", "U0CAROL")
    assert "tickets created 1" in stats["text"]
    await stack.outbox_idle()

    # The desk reads everything back ...
    async with stack.sessions() as s:
        customer = await s.get_one(Customer, 1)
        assert customer.name == "Annabel"
        assert customer.note == "Deliveries to 5 Elm Street only"
        phone = await s.scalar(select(Identity.phone).where(Identity.channel == "telegram"))
        assert phone == "+447700900123"
        said = (await s.scalars(select(Message.text).where(Message.direction == "in"))).all()
        assert "Deliver to 5 Elm Street, call +44 7700 900123" in said
    # ... and the database's own copy says none of it.
    stored = dump(stack.database_url)
    assert "CREATE TABLE" in stored or "CREATE TABLE" in stored.upper()
    for secret in SECRETS:
        assert secret not in stored, [line[:200] for line in stored.splitlines() if secret in line]
    assert f"dk1:{Keyring.of(KEY).key_id}:" in stored

    # Forget still erases (what it erased reads back erased, not merely sealed).
    asked = await ask(stack, "forget 1", "U0CAROL")
    done = await slack.clicks_in_answer(SUPPORT, asked, "desk_forget", "U0CAROL")
    assert done[-1]["text"].startswith("Customer c1 is forgotten")
    async with stack.sessions() as s:
        customer = await s.get_one(Customer, 1)
        assert "Annabel" not in customer.name and customer.note is None
        said = (await s.scalars(select(Message.text).where(Message.direction == "in"))).all()
        assert not any("Elm Street" in t for t in said)
        ticket = await s.get_one(Ticket, 1)
        assert "Elm Street" not in ticket.subject

    async def redrawn() -> bool:
        return "Elm Street" not in json.dumps(slack.messages(SUPPORT)[0])

    await eventually(redrawn, "the card redrawn without her words")


async def test_with_a_key_a_whatsapp_number_is_in_no_column_and_replies_still_reach_it(
    keyed: Stack,
) -> None:
    """A WhatsApp id is the customer's phone number: identities, tickets, the inbox's and the
    outbox's order keys hold it sealed; the desk still finds the customer by it (their second
    message joins the ticket) and sends to it."""
    stack = keyed
    wa, slack = stack.standins.whatsapp, stack.standins.slack
    wamid = await wa.customer_says(WA_DUMP, "Where is my parcel?", name="Bartholomew")
    card = await stack.card()
    await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "It leaves today.")

    async def replied() -> bool:
        return any(m.get("text", {}).get("body") == "It leaves today." for m in wa.sent_to(WA_DUMP))

    await eventually(replied, "the agent's reply on the customer's WhatsApp")
    await wa.customer_says(WA_DUMP, "Thank you!")
    await stack.thread_has(card["ts"], "Thank you!")
    await stack.outbox_idle()
    async with stack.sessions() as s:
        ticket = await s.get_one(Ticket, 1)
        assert (ticket.channel, ticket.chat_id) == ("whatsapp", WA_DUMP)
        assert await s.scalar(select(func.count()).select_from(Ticket)) == 1
        ident = await s.scalar(select(Identity).where(Identity.external_id == WA_DUMP))
        assert ident is not None and ident.customer_id == ticket.customer_id
    # The card shows the agents who wrote (it reads the sealed values back).
    assert "Bartholomew" in json.dumps(card["blocks"])
    stored = dump(stack.database_url)
    # A real wamid is base64 of the customer's number and more: no message id is in clear.
    wamids = [wamid, *(m["id"] for m in wa.sent_to(WA_DUMP))]
    for secret in (WA_DUMP, "7700900789", "Bartholomew", "parcel", *wamids):
        assert secret not in stored, [line[:200] for line in stored.splitlines() if secret in line]
    assert f"da1:{Keyring.of(KEY).key_id}:" in stored


async def test_with_a_key_a_verified_number_still_links_customers(keyed: Stack) -> None:
    await test_customers.test_a_verified_number_links_telegram_to_whatsapp_and_an_agent_unlinks(
        keyed
    )


async def test_with_a_key_stats_count_the_loop(keyed: Stack) -> None:
    await test_stats.test_stats_after_tickets_are_answered_resolved_and_rated_through_the_loop(
        keyed
    )


async def test_with_a_key_the_tickets_export_works(keyed: Stack) -> None:
    await test_stats_uploads.test_export_sends_the_tickets_csv_to_the_supervisors_dm_and_audits_it(
        keyed
    )


async def raw_values(database_url: str) -> list[str]:
    """Every stored value of every sealed column, as the database holds it."""
    engine = create_engine(database_url)
    out: list[str] = []
    try:
        async with engine.connect() as conn:
            for sealed in sealed_columns():
                rows = await conn.execute(
                    select(cast(_column(sealed.table, sealed.column), Text)).where(
                        _column(sealed.table, sealed.column).is_not(None)
                    )
                )
                out += [v for (v,) in rows if v not in ("", '""')]
    finally:
        await engine.dispose()
    return out


def _column(table: str, column: str) -> Any:
    from storage.models import Base

    return Base.metadata.tables[table].c[column]


async def test_a_rotation_under_load_loses_nothing_and_ends_on_the_new_key(
    database_url: str,
) -> None:
    """Clear rows (before any key), rows under the old key, then the new key with the old one
    still read: ``keys rotate`` runs while customers keep writing; every message is there and
    every stored value ends under the new key."""
    sent: list[str] = []

    async def customers_write(stack: Stack, chats: range, rounds: int, tag: str) -> None:
        for r in range(rounds):
            for chat in chats:
                text = f"{tag} round {r} from {chat}: my parcel 5 Elm Street"
                await stack.standins.telegram.customer_says(chat, text, f"Name{chat}")
                sent.append(text)
            text = f"{tag} round {r} from WhatsApp: my parcel 5 Elm Street"
            await stack.standins.whatsapp.customer_says(WA_LOAD, text, "NameWA")
            sent.append(text)

    async def all_in(stack: Stack) -> bool:
        async with stack.sessions() as s:
            n = await s.scalar(
                select(func.count()).select_from(Message).where(Message.direction == "in")
            )
        return n == len(sent)

    # One desk throughout; its keyring changes as a restart with new settings would change it.
    async with running_stack(database_url) as stack:  # no key: stored in clear
        await customers_write(stack, range(101, 104), 2, "clear")
        await eventually(lambda: all_in(stack), "the clear messages", timeout=30)
        crypto.install(Keyring.of(OLD))
        await customers_write(stack, range(101, 106), 2, "old")
        await eventually(lambda: all_in(stack), "the old key's messages", timeout=30)
        before = await raw_values(database_url)
        assert any(v.startswith("clear round") for v in before)  # some rows in clear ...
        old_id, new_id = Keyring.of(OLD).key_id, Keyring.of(KEY).key_id
        assert any(f"dk1:{old_id}:" in v for v in before)  # ... and some under the old key

        ring = Keyring.of(KEY, [OLD])
        crypto.install(ring)
        load = asyncio.create_task(customers_write(stack, range(101, 108), 3, "during"))
        out = io.StringIO()
        code = await rotate(database_url, batch=5, out=out)
        await load
        await eventually(lambda: all_in(stack), "every message written during the rotation", 60)
        # A last pass finds nothing left: the desk wrote every row it touched meanwhile under
        # the new key, and the rotation took the rest.
        code = code or await rotate(database_url, batch=5, out=out)
        assert code == 0, out.getvalue()
        assert "re-encrypted" in out.getvalue()
        assert await remaining(stack.sessions, ring) == {}
        async with stack.sessions() as s:
            texts = set(await s.scalars(select(Message.text).where(Message.direction == "in")))
            # Each customer's messages, in clear, under the old key and under the new, all
            # found their one ticket: the lookups asked for every stored form of the address.
            chats = (await s.execute(select(Ticket.channel, Ticket.chat_id))).all()
            cards = {
                c: str(ts) for c, ts in await s.execute(select(Ticket.chat_id, Ticket.slack_ts))
            }
        assert texts == set(sent)
        assert sorted(chats) == sorted(
            [("telegram", str(n)) for n in range(101, 108)] + [("whatsapp", WA_LOAD)]
        )
        # After the rotation, replies on the first and the WhatsApp customer's cards reach
        # them, and their next messages join the same tickets.
        slack = stack.standins.slack
        await slack.agent_replies(SUPPORT, cards["101"], "U0BOB", "After the rotation, 101")
        await slack.agent_replies(SUPPORT, cards[WA_LOAD], "U0BOB", "After the rotation, WhatsApp")

        async def replied() -> bool:
            tg = [m.get("text") for m in stack.standins.telegram.sent_to(101)]
            wa_texts = [
                m.get("text", {}).get("body") for m in stack.standins.whatsapp.sent_to(WA_LOAD)
            ]
            return "After the rotation, 101" in tg and "After the rotation, WhatsApp" in wa_texts

        await eventually(replied, "the agents' replies after the rotation", timeout=30)
        await customers_write(stack, range(101, 102), 1, "after")
        await eventually(lambda: all_in(stack), "the messages after the rotation", timeout=30)
        async with stack.sessions() as s:
            assert await s.scalar(select(func.count()).select_from(Ticket)) == len(chats)
    after = await raw_values(database_url)

    def under_new_key(v: str) -> bool:
        return f"dk1:{new_id}:" in v or v.startswith((f"da1:{new_id}:", "slack:"))

    assert after and all(under_new_key(v) for v in after), [
        v[:60] for v in after if not under_new_key(v)
    ][:5]
    assert any(v.startswith(f"da1:{new_id}:") for v in after)  # the addresses, moved too
    stored = dump(database_url)
    assert "Elm Street" not in stored
    assert WA_LOAD not in stored and "telegram:101" not in stored
    # The old key can go: the desk reads everything with the new key alone.
    crypto.install(Keyring.of(KEY))
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as s:
            names = set((await s.scalars(select(Customer.name))).all())
            assert names == {f"Name{n}" for n in range(101, 108)} | {"NameWA"}
    finally:
        await engine.dispose()


async def test_with_a_key_a_mails_body_subject_and_reply_address_are_sealed(
    database_url: str, dovecot: Dovecot
) -> None:
    """The e-mail channel: the customer's words, the subject and their address are encrypted
    everywhere, the columns the desk finds them by included (sealed deterministically,
    storage/crypto.Address), and the desk still answers them and threads their answers."""
    async with email_stack(database_url, dovecot, data_keys=Keyring.of(KEY)) as ms:
        ms.deliver(mail("My flat is at 5 Elm Street", subject="Moving to Elm Street"))
        card = await ms.stack.card()
        assert "5 Elm Street" in json.dumps(card["blocks"])
        [ack] = await ms.sent(1)
        assert ack["To"] == CUSTOMER and "Moving to Elm Street" in ack["Subject"]
        await ms.stack.outbox_idle()
        async with ms.stack.sessions() as s:
            thread = (await s.scalars(select(EmailThread))).one()
            assert (thread.address, thread.subject) == (CUSTOMER, "Moving to Elm Street")
        # An agent's reply reaches the address, sealed in every column that holds it, and
        # the customer's answer (threaded by Message-ID) joins the same ticket.
        await ms.stack.standins.slack.agent_replies(
            SUPPORT, card["ts"], "U0BOB", "We will deliver to your new flat."
        )
        reply = (await ms.sent(2))[-1]
        body = reply.get_body(preferencelist=("plain",))
        assert reply["To"] == CUSTOMER and body is not None and "new flat" in body.get_content()
        ms.deliver(mail("Thanks, see you there", in_reply_to=reply["Message-ID"]))
        await ms.stack.thread_has(card["ts"], "Thanks, see you there")
        async with ms.stack.sessions() as s:
            (ticket,) = (await s.scalars(select(Ticket))).all()
            assert ticket.chat_id.startswith(f"{CUSTOMER}#")  # read back as the desk uses it
            customer = await s.scalar(
                select(Identity.customer_id).where(Identity.external_id == CUSTOMER)
            )
            assert customer == ticket.customer_id
        await ms.stack.outbox_idle()
        stored = dump(database_url)
        assert "Elm Street" not in stored and "flat" not in stored
        # The address, the local part alone, and the desk's unkeyed digest of it: none.
        assert CUSTOMER not in stored and "anna@" not in stored, [
            line[:200] for line in stored.splitlines() if "anna@" in line
        ]
        assert f"da1:{Keyring.of(KEY).key_id}:" in stored
