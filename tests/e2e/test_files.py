"""Files both ways, over real HTTP with aiogram, aiohttp and slack_sdk against the stand-ins.

A customer's photo (Telegram getFile + the file endpoint) or document (WhatsApp media URL with
the bearer token) lands in the card's thread through files.getUploadURLExternal and
files.completeUploadExternal; the assignee's file (file_share, url_private with the bot token)
reaches the customer through sendPhoto/sendDocument or WhatsApp's media upload. Limits are
checked first, and a file that cannot go is said in the thread.
"""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
from sqlalchemy import select

from storage.models import Message

from .conftest import SUPPORT, Stack, eventually

MB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # about 10 KB of "photo"
PDF = b"%PDF-1.4\n" + b"invoice line\n" * 500


async def _thread_files(stack: Stack, ts: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` messages with files in the card's thread, once they are there."""

    async def probe() -> list[dict[str, Any]] | None:
        found = [m for m in stack.standins.slack.thread(SUPPORT, ts) if m.get("files")]
        return found if len(found) >= n else None

    return await eventually(probe, f"{n} file(s) in the card's thread")


def _uploaded(stack: Stack, message: dict[str, Any]) -> bytes:
    return bytes(stack.standins.slack.files[message["files"][0]["id"]]["content"])


async def _claimed_ticket(stack: Stack, say: Any) -> dict[str, Any]:
    """A ticket whose card Alice claimed (her thread messages go to the customer)."""
    await say()
    card = await stack.card()
    await stack.standins.slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")

    async def claimed() -> bool:
        return (await stack.ticket(1)).assignee_id == "U0ALICE"

    await eventually(claimed, "Alice's claim")
    return card


async def test_a_telegram_photo_lands_in_the_thread_with_its_caption(stack: Stack) -> None:
    tg = stack.standins.telegram
    await tg.customer_says(61, "My parcel arrived broken", first_name="Pia")
    card = await stack.card()
    await tg.customer_sends_photo(61, "see the box", "Pia", content=PNG)

    [shared] = await _thread_files(stack, card["ts"], 1)
    assert shared["text"] == "*Pia:* see the box"  # the caption is the file's message
    assert _uploaded(stack, shared) == PNG  # the bytes the customer sent, fetched by getFile
    assert {"getfile", "sendmessage"} <= set(tg.calls)
    assert len(stack.cards()) == 1  # the photo joined the ticket the text opened
    async with stack.sessions() as s:
        photo = await s.scalar(select(Message).where(Message.text == "see the box"))
    assert photo is not None and photo.attachments[0]["kind"] == "photo"


async def test_a_whatsapp_document_opens_a_ticket_and_lands_in_its_thread(stack: Stack) -> None:
    wa = stack.standins.whatsapp
    await wa.customer_sends_media(
        "15550001111",
        "document",
        PDF,
        mime_type="application/pdf",
        filename="invoice-17.pdf",
        caption="I was charged twice",
        name="Omar",
    )
    card = await stack.card()  # a file with a caption opens a ticket as text does
    assert "I was charged twice" in str(card["blocks"])
    [shared] = await _thread_files(stack, card["ts"], 1)
    assert shared["files"][0]["name"] == "invoice-17.pdf"
    assert "Omar" in shared["text"] and "invoice-17.pdf" in shared["text"]
    assert _uploaded(stack, shared) == PDF  # via GET /{media-id}, then its URL with the token
    ack = (await wa.wait_for_sent("15550001111", 1))[0]
    assert "Your ticket number is #1" in str(ack)  # acknowledged as a text message would be


async def test_an_agents_file_reaches_a_telegram_customer(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack

    async def say() -> None:
        await tg.customer_says(62, "How do I set it up?", first_name="Ann")

    card = await _claimed_ticket(stack, say)
    await slack.agent_shares_file(
        SUPPORT, card["ts"], "U0ALICE", "setup.png", PNG, mimetype="image/png", text="Like this"
    )
    await slack.agent_shares_file(
        SUPPORT, card["ts"], "U0ALICE", "guide.pdf", PDF, mimetype="application/pdf"
    )
    sent = await tg.wait_for_sent(62, 4)  # ack, "Like this", the photo, the document
    assert sent[1]["text"] == "Like this"
    photo, document = sent[2], sent[3]
    assert tg.file_content(photo["photo"][0]["file_id"]) == PNG  # sendPhoto, multipart
    assert document["document"]["file_name"] == "guide.pdf"
    assert tg.file_content(document["document"]["file_id"]) == PDF  # sendDocument
    assert "url_private" in slack.calls  # fetched with the bot token

    async with stack.sessions() as s:
        rows = (
            await s.scalars(select(Message).where(Message.direction == "out").order_by(Message.id))
        ).all()

    async def delivered() -> bool:
        async with stack.sessions() as s:
            states = (await s.scalars(select(Message.delivery).where(Message.id.in_(ids)))).all()
        return all(d == "sent" for d in states)

    ids = [m.id for m in rows]
    assert [m.attachments[0]["name"] if m.attachments else m.text for m in rows] == [
        "Like this",
        "setup.png",
        "guide.pdf",
    ]
    await eventually(delivered, "every relayed message and file recorded as sent")


async def test_an_agents_file_reaches_a_whatsapp_customer(stack: Stack) -> None:
    wa, slack = stack.standins.whatsapp, stack.standins.slack

    async def say() -> None:
        await wa.customer_says("15550002222", "Can you send the form?", name="Lee")

    card = await _claimed_ticket(stack, say)
    await slack.agent_shares_file(
        SUPPORT, card["ts"], "U0ALICE", "form.pdf", PDF, mimetype="application/pdf"
    )
    await slack.agent_shares_file(
        SUPPORT, card["ts"], "U0ALICE", "map.png", PNG, mimetype="image/png"
    )
    sent = await wa.wait_for_sent("15550002222", 3)
    document, image = sent[1], sent[2]
    assert document["type"] == "document" and document["document"]["filename"] == "form.pdf"
    assert wa.media_of(document)["content"] == PDF  # uploaded to /media, sent by its id
    assert image["type"] == "image" and wa.media_of(image)["content"] == PNG


async def test_files_over_the_limits_are_said_in_the_thread_never_dropped(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack

    async def say() -> None:
        await tg.customer_says(63, "Aquí está el vídeo del fallo", "Max", language_code="es")

    card = await _claimed_ticket(stack, say)

    # The customer's 25 MB file: Telegram lets bots download 20 MB, so no getFile is tried.
    await tg.customer_sends_document(
        63, "fault.mp4", b"mp4", mime_type="video/mp4", caption="the fault", size=25 * MB
    )
    [refused] = await stack.thread_has(card["ts"], "could not be relayed")
    assert "fault.mp4" in refused["text"] and "25.0 MB" in refused["text"]
    assert "20 MB" in refused["text"] and "the fault" in refused["text"]
    assert "getfile" not in tg.calls
    told_customer = (await tg.wait_for_sent(63, 2))[1]["text"]  # in their language
    assert told_customer.startswith("No pudimos recibir su archivo") and "20 MB" in told_customer
    async with stack.sessions() as s:  # the desk still records what the customer sent
        kept = await s.scalar(select(Message).where(Message.text == "the fault"))
    assert kept is not None and kept.attachments[0]["size"] == 25 * MB

    # The agent's 60 MB file: over Telegram's 50 MB for bots; the thread says so.
    big_ts = await slack.agent_shares_file(
        SUPPORT, card["ts"], "U0ALICE", "firmware.bin", b"\0" * 64, size=60 * MB
    )
    [told] = await stack.thread_has(card["ts"], "Not sent to the customer")
    assert "firmware.bin" in told["text"] and "50 MB" in told["text"]

    async def crossed() -> bool:
        return "x" in slack.reactions(SUPPORT, big_ts)

    await eventually(crossed, "the ❌ on the file that did not go")
    # A reply after it arrives, and nothing else did (the outbox keeps a chat's order).
    await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Please use a download link")
    sent = await tg.wait_for_sent(63, 3)
    assert sent[2]["text"] == "Please use a download link"
    assert not any("document" in m or "photo" in m for m in tg.sent_to(63))


async def test_a_note_with_a_file_is_never_sent(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack

    async def say() -> None:
        await tg.customer_says(64, "Why was I refused?", first_name="Kim")

    card = await _claimed_ticket(stack, say)
    # The assignee's own note, and a colleague's file: both internal.
    note_ts = await slack.agent_shares_file(
        SUPPORT,
        card["ts"],
        "U0ALICE",
        "fraud-score.png",
        PNG,
        mimetype="image/png",
        text="note: internal risk screenshot",
    )
    bob_ts = await slack.agent_shares_file(
        SUPPORT, card["ts"], "U0BOB", "ledger.pdf", PDF, mimetype="application/pdf"
    )

    async def both_noted() -> bool:
        return "memo" in slack.reactions(SUPPORT, note_ts) and "memo" in slack.reactions(
            SUPPORT, bob_ts
        )

    await eventually(both_noted, "the 📝 on both internal files")
    await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "It was a bank decline.")
    sent = await tg.wait_for_sent(64, 2)
    assert [m.get("text") for m in sent] == [sent[0]["text"], "It was a bank decline."]
    assert not any("document" in m or "photo" in m for m in tg.sent_to(64))
    assert "url_private" not in slack.calls  # the internal files were never even fetched
    async with stack.sessions() as s:
        notes = (await s.scalars(select(Message).where(Message.direction == "note"))).all()
    assert sorted(n.attachments[0]["name"] for n in notes) == ["fraud-score.png", "ledger.pdf"]


async def test_url_private_needs_the_bot_token(stack: Stack) -> None:
    """Like Slack: without the token the file URL answers 200 with a sign-in page."""
    slack = stack.standins.slack

    async def say() -> None:
        await stack.standins.telegram.customer_says(65, "hi", first_name="Al")

    card = await _claimed_ticket(stack, say)
    await slack.agent_shares_file(
        SUPPORT, card["ts"], "U0ALICE", "a.pdf", PDF, mimetype="application/pdf"
    )
    shared = next(m for m in slack.thread(SUPPORT, card["ts"]) if m.get("files"))
    url = shared["files"][0]["url_private"]
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert PDF not in await resp.read()
        async with http.get(url, headers={"Authorization": "Bearer xoxb-wrong"}) as resp:
            assert resp.content_type == "text/html"
        async with http.get(url, headers={"Authorization": f"Bearer {slack.bot_token}"}) as resp:
            assert await resp.read() == PDF


async def test_forgetting_a_customer_deletes_their_files_from_slack(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(66, "My passport scan", first_name="Vera")
    card = await stack.card()
    await tg.customer_sends_photo(66, "passport of Vera Nowak", "Vera", content=PNG)
    [shared] = await _thread_files(stack, card["ts"], 1)
    file_id = shared["files"][0]["id"]

    answers = await slack.slash_command("/desk", "forget 1", "U0CAROL", SUPPORT)
    asked = [a for a in answers if "text" in a][-1]
    await slack.clicks_in_answer(SUPPORT, asked, "desk_forget", "U0CAROL")

    async def deleted() -> bool:
        return bool(slack.files[file_id].get("deleted"))

    await eventually(deleted, "files.delete of the customer's photo")
    assert slack.files[file_id]["content"] == b""
    shown = str(slack.thread(SUPPORT, card["ts"]))
    assert "Vera Nowak" not in shown
    assert "files.info" in slack.calls  # the caption's message was found and overwritten


async def test_the_sandbox_control_api_sends_files_both_ways(stack: Stack) -> None:
    """What the page's 📎 buttons do: a customer's file and an agent's file, as JSON requests."""
    tg = stack.standins.telegram
    base = stack.standins.url
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(base + path, json=body) as resp:
                assert resp.status == 200, await resp.text()
                answer: dict[str, Any] = await resp.json()
                return answer

        await post(
            "/control/telegram/customer_sends_file",
            {
                "chat_id": 67,
                "kind": "document",
                "file_name": "receipt.pdf",
                "content_base64": base64.b64encode(PDF).decode(),
                "caption": "my receipt",
                "first_name": "Ola",
            },
        )
        card = await stack.card()
        [shared] = await _thread_files(stack, card["ts"], 1)
        assert _uploaded(stack, shared) == PDF
        await stack.standins.slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")

        async def claimed() -> bool:
            return (await stack.ticket(1)).assignee_id == "U0ALICE"

        await eventually(claimed, "Alice's claim")
        await post(
            "/control/slack/agent_shares_file",
            {"channel": SUPPORT, "thread_ts": card["ts"], "user": "U0ALICE", "file_name": "a.png"},
        )
        sent = await tg.wait_for_sent(67, 2)
        assert "photo" in sent[1]  # the page's made-up PNG, sent with sendPhoto
        async with http.post(
            base + "/control/whatsapp/customer_sends_file", json={"wa_id": "15550003333"}
        ) as resp:
            assert resp.status == 400 and "kind must be one of image, document" in await resp.text()


async def test_without_files_read_the_thread_says_the_file_did_not_go(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    slack.files_read_granted = False  # Slack then serves its sign-in page, with HTTP 200

    async def say() -> None:
        await tg.customer_says(68, "the manual please", first_name="Bo")

    card = await _claimed_ticket(stack, say)
    shared_ts = await slack.agent_shares_file(
        SUPPORT, card["ts"], "U0ALICE", "manual.pdf", PDF, mimetype="application/pdf"
    )
    [told] = await stack.thread_has(card["ts"], "Not delivered: the file manual.pdf")
    assert "files:read" in told["text"]

    async def crossed() -> bool:
        return "x" in slack.reactions(SUPPORT, shared_ts)

    await eventually(crossed, "the ❌ on the file the customer did not get")
    assert not any("document" in m for m in tg.sent_to(68))  # no HTML page sent as the manual
    async with stack.sessions() as s:
        row = await s.scalar(select(Message).where(Message.direction == "out"))
    assert row is not None and row.delivery == "failed"
