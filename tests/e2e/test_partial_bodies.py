"""Bodies that arrive in pieces, over a raw socket against the desk's real webhook server.

Real networks split a request into several TCP segments with gaps between them; the desk must
read a body to its end (Content-Length or the last chunk) before it judges it, and count a
chunked body against ``DESK_MAX_BODY_BYTES`` as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from storage.models import InboxRow

from .conftest import WA_PHONE_ID, Stack, eventually, running_stack

PIECES = 3
GAP = 0.15


@pytest.fixture
async def hooked(database_url: str) -> AsyncIterator[Stack]:
    """A desk taking Telegram by webhook (as well as WhatsApp and Slack, always by webhook)."""
    async with running_stack(database_url, telegram_webhook="/telegram/webhook") as running:
        yield running


async def raw_post(
    url: str, path: str, headers: dict[str, str], pieces: list[bytes], *, chunked: bool = False
) -> int:
    """POST ``pieces`` as separate writes GAP seconds apart; return the HTTP status."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if chunked:
            head.append("Transfer-Encoding: chunked")
        else:
            head.append(f"Content-Length: {sum(len(p) for p in pieces)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        for i, piece in enumerate(pieces):
            if i:
                await asyncio.sleep(GAP)
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        return int(status_line.split()[1])
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):  # the server may close first after a 413
            await writer.wait_closed()


def split(body: bytes, n: int = PIECES) -> list[bytes]:
    size = -(-len(body) // n)
    return [body[i : i + size] for i in range(0, len(body), size)]


def telegram_update(update_id: int, chat_id: int, text: str) -> bytes:
    message = {
        "message_id": update_id,
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": "private", "first_name": "Pia"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Pia"},
        "text": text,
    }
    return json.dumps({"update_id": update_id, "message": message}).encode()


async def inbox_ids(stack: Stack) -> set[str]:
    async with stack.sessions() as s:
        return set((await s.scalars(select(InboxRow.external_id))).all())


async def test_telegram_update_in_three_pieces_is_accepted(hooked: Stack) -> None:
    body = telegram_update(900001, 4242, "my order never came " * 200)  # about 4 KB
    assert len(body) > 4000
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": "tg-secret_1"}
    status = await raw_post(hooked.desk.url, "/telegram/webhook", headers, split(body))
    assert status == 200
    card = await hooked.card()
    assert "my order never came" in json.dumps(card)


async def test_whatsapp_signature_is_checked_over_the_whole_body(hooked: Stack) -> None:
    wa = hooked.standins.whatsapp
    message = {
        "from": "15550001111",
        "id": "wamid.PIECES1",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": "split across the network " * 150},
    }
    envelope = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "1",
                                "phone_number_id": WA_PHONE_ID,
                            },
                            "contacts": [{"profile": {"name": "Ola"}, "wa_id": "15550001111"}],
                            "messages": [message],
                        },
                    }
                ],
            }
        ],
    }
    body = json.dumps(envelope).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": wa.sign(body)}
    status = await raw_post(hooked.desk.url, "/whatsapp/webhook", headers, split(body))
    assert status == 200
    card = await hooked.card()
    assert "split across the network" in json.dumps(card)


async def test_slack_signature_is_checked_over_the_whole_body(hooked: Stack) -> None:
    slack = hooked.standins.slack
    envelope = {
        "token": "sandbox-verification-token",
        "team_id": "T0SANDBOX",
        "api_app_id": "A0SANDBOX",
        "type": "event_callback",
        "event_id": "EvPIECES0001",
        "event_time": int(time.time()),
        "event": {
            "type": "app_mention",
            "user": "U0ALICE",
            "channel": "C0ELSEWHERE",
            "ts": "1700000000.000100",
            "text": "hello " * 600,
        },
    }
    body = json.dumps(envelope).encode()
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": slack.sign(body, ts),
    }
    status = await raw_post(hooked.desk.url, "/slack/events", headers, split(body))
    assert status == 200


async def test_chunked_body_over_the_limit_is_413_and_nothing_is_stored(hooked: Stack) -> None:
    limit = hooked.desk.settings.max_body_bytes
    before = await inbox_ids(hooked)
    text = "x" * (limit + 50_000)
    body = telegram_update(900002, 4343, text)
    pieces = [body[i : i + 64_000] for i in range(0, len(body), 64_000)]
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": "tg-secret_1"}
    status = await raw_post(hooked.desk.url, "/telegram/webhook", headers, pieces, chunked=True)
    assert status == 413
    assert await inbox_ids(hooked) == before

    # The desk is still answering, and still taking what fits.
    small = telegram_update(900003, 4343, "and now a short one")
    status = await raw_post(hooked.desk.url, "/telegram/webhook", headers, [small], chunked=True)
    assert status == 200

    async def stored() -> bool:
        return "900003" in " ".join(await inbox_ids(hooked))

    await eventually(stored, "the short update in the inbox")
