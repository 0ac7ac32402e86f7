"""What the platforms do wrong, and what the desk does about it: over real HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import aiohttp
from sqlalchemy import func, select

from storage.models import InboxRow, Message, OutboxRow

from .conftest import SLACK_SECRET, SUPPORT, Stack, eventually


async def test_telegram_and_slack_429_are_delivered_once_after_retry_after(stack: Stack) -> None:
    tg = stack.standins.telegram
    tg.fail_next("sendMessage", status=429, retry_after=1)
    stack.standins.slack.fail_next("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()
    await tg.customer_says(7, "hello?", first_name="Rae")
    await tg.wait_for_sent(7, 1)
    await stack.card()
    assert time.monotonic() - started >= 1.0  # waited out the retry-after, both of them
    await _outbox_empty(stack)
    assert len(tg.sent_to(7)) == 1 and len(stack.cards()) == 1
    async with stack.sessions() as s:
        attempts = dict((await s.execute(select(OutboxRow.channel, OutboxRow.attempts))).all())
    assert attempts == {"telegram": 1, "slack": 1}  # a 429 is a wait, not a failed attempt
    metrics = await _get(stack, "/metrics")
    assert 'deskbot_deliveries_total{channel="telegram",result="retry_after"} 1.0' in metrics
    assert 'deskbot_deliveries_total{channel="slack",result="retry_after"} 1.0' in metrics


async def test_blocked_customer_is_shown_on_the_ticket_and_not_retried(stack: Stack) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(9, "my card is stuck", first_name="Bo")
    await tg.wait_for_sent(9, 1)
    card = await stack.card()
    tg.block(9)
    reply_ts = await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Try again now?")
    notice = await stack.thread_has(card["ts"], "Not delivered")
    assert "blocked the bot" in notice[0]["text"]

    async def marked() -> bool:
        return "x" in slack.reactions(SUPPORT, reply_ts)

    await eventually(marked, "the ❌ on the undelivered reply")
    await _outbox_empty(stack)
    async with stack.sessions() as s:
        row = await s.scalar(
            select(OutboxRow).where(OutboxRow.channel == "telegram", OutboxRow.status == "failed")
        )
        assert row is not None and row.attempts == 1
        assert "bot was blocked by the user" in (row.last_error or "")
        msg = await s.scalar(select(Message).where(Message.direction == "out"))
        assert msg is not None and msg.delivery == "failed"

    async def card_warns() -> bool:
        return "blocked the bot" in json.dumps(stack.cards()[0]["blocks"])

    await eventually(card_warns, "the card to warn that the customer is unreachable")


async def test_bad_signatures_are_rejected_and_nothing_is_written(stack: Stack) -> None:
    wa, slack = stack.standins.whatsapp, stack.standins.slack
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "1", "phone_number_id": "1"},
                            "contacts": [{"profile": {"name": "Eve"}, "wa_id": "1666"}],
                            "messages": [
                                {
                                    "from": "1666",
                                    "id": "wamid.forged",
                                    "timestamp": "1749416383",
                                    "type": "text",
                                    "text": {"body": "forged"},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    assert await wa.deliver_raw(payload, secret="not-the-app-secret") in (401, 403)
    assert await wa.deliver_raw(payload, sign=False) in (401, 403)

    body = json.dumps(
        {
            "type": "event_callback",
            "event_id": "EvForged",
            "team_id": "T0SANDBOX",
            "event": {
                "type": "message",
                "channel": SUPPORT,
                "user": "U0ALICE",
                "text": "x",
                "ts": "1.1",
                "thread_ts": "1.0",
            },
        }
    ).encode()
    ts = str(int(time.time()))
    bad = "v0=" + hmac.new(b"wrong", f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    status, _ = await slack.deliver_raw(
        body,
        {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": bad,
        },
    )
    assert status == 401
    stale = str(int(time.time()) - 600)
    good_but_stale = (
        "v0="
        + hmac.new(
            SLACK_SECRET.encode(), f"v0:{stale}:".encode() + body, hashlib.sha256
        ).hexdigest()
    )
    status, _ = await slack.deliver_raw(
        body,
        {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": stale,
            "X-Slack-Signature": good_but_stale,
        },
    )
    assert status == 401

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack.desk.url}/whatsapp/webhook", data=b"{not json") as r:
            assert r.status in (401, 403)  # unsigned: refused before it is even parsed
        async with http.post(
            f"{stack.desk.url}/whatsapp/webhook", data=b"x" * (2 * 1024 * 1024)
        ) as r:
            assert r.status == 413
    async with stack.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(InboxRow)) == 0


async def test_whatsapp_verification_handshake(stack: Stack) -> None:
    wa = stack.standins.whatsapp
    assert await wa.verify_webhook("wa-verify-token", "1158201444") == (200, "1158201444")
    status, _ = await wa.verify_webhook("wrong", "1158201444")
    assert status == 403


async def test_healthz_and_metrics(stack: Stack) -> None:
    health = json.loads(await _get(stack, "/healthz"))
    assert health == {
        "database": "ok",
        "adapters": {"telegram": True, "whatsapp": True, "slack": True},
        "loops": {"dispatcher": "ok", "outbox": "ok"},
        # The templates rules.yaml names, and whether WhatsApp refused any (docs/whatsapp.md).
        "whatsapp_templates": {
            name: "no refusal in the last 7 days"
            for name in (
                "rate_ticket (en_US)",
                "ticket_update (en_US)",
                "ticket_update (es)",
                "ticket_update (ru)",
                "ticket_update (zh_CN)",
            )
        },
    }
    await stack.standins.telegram.customer_says(5, "hi", first_name="Mo")
    await stack.card()
    await _outbox_empty(stack)
    metrics = await _get(stack, "/metrics")
    assert "deskbot_outbox_backlog 0.0" in metrics
    assert "deskbot_inbox_lag_seconds 0.0" in metrics
    assert 'deskbot_deliveries_total{channel="slack",result="sent"} 1.0' in metrics


async def test_desk_slash_command_counts_from_the_database(stack: Stack) -> None:
    tg = stack.standins.telegram
    await tg.customer_says(1, "the site is down, outage everywhere", first_name="A")
    await tg.customer_says(2, "question about my order", first_name="B")
    await stack.card(2)
    responses = await stack.standins.slack.slash_command("/desk", "", "U0CAROL", SUPPORT)
    text = json.dumps(responses, ensure_ascii=False)
    assert "2 active tickets" in text
    assert "unclaimed (new): 2" in text and "urgent 1" in text and "normal 1" in text


async def _outbox_empty(stack: Stack) -> None:
    async def empty() -> bool:
        async with stack.sessions() as s:
            n = await s.scalar(
                select(func.count())
                .select_from(OutboxRow)
                .where(OutboxRow.status.in_(("pending", "sending")))
            )
            return n == 0

    await eventually(empty, "the outbox to empty")


async def _get(stack: Stack, path: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(stack.desk.url + path) as r:
        return await r.text()
