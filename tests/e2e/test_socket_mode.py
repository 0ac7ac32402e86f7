"""Slack over Socket Mode (SLACK_APP_TOKEN): the desk dials out to the stand-in's WebSocket,
serves no Slack endpoint, and keeps every event once through reconnects, lost acks, a dead
connection and two desk processes."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.app import DeskApp, StartupError
from bot.delivery.outbox import RateLimits
from sandbox import StandIns
from storage.models import InboxRow, Message

from .conftest import (
    RULES,
    SLACK_SECRET,
    SLACK_TOKEN,
    SUPPORT,
    TELEGRAM_TOKEN,
    WA_PHONE_ID,
    WA_SECRET,
    WA_TOKEN,
    Stack,
    desk_settings,
    eventually,
    free_port,
)

APP_TOKEN = "xapp-1-A0DESKBOT-e2e-test"


async def socket_standins() -> StandIns:
    port = free_port()
    standins = StandIns(
        desk_url=f"http://127.0.0.1:{port}",
        telegram_token=TELEGRAM_TOKEN,
        whatsapp_access_token=WA_TOKEN,
        whatsapp_phone_number_id=WA_PHONE_ID,
        whatsapp_app_secret=WA_SECRET,
        slack_bot_token=SLACK_TOKEN,
        slack_signing_secret=SLACK_SECRET,
        retry_base_delay=0.05,
        slack_app_token=APP_TOKEN,
    )
    await standins.start()
    # Slack waits 3 s for an envelope's ack; the stand-in and the desk here share the test's
    # loop and a loaded CI machine's two cores, and a claim's ack (after a PostgreSQL insert)
    # once took longer. The ack-after-the-inbox rule is what these tests prove, with the bound
    # doubled; a lost ack is then redelivered after 6 s rather than 3.
    standins.slack.socket.ack_timeout = 6.0
    standins.desk_port = port  # type: ignore[attr-defined]
    return standins


def socket_desk(
    standins: StandIns, database_url: str, port: int, *, watchdog: float = 30.0
) -> DeskApp:
    settings = desk_settings(standins, database_url, port)
    assert settings.slack is not None
    # No signing secret at all: Socket Mode needs none.
    slack = dataclasses.replace(
        settings.slack, signing_secret=None, app_token=APP_TOKEN, socket_watchdog_seconds=watchdog
    )
    return DeskApp(
        dataclasses.replace(settings, slack=slack),
        RULES,
        idle_poll=0.05,
        limits=RateLimits.lifted(),
    )


@asynccontextmanager
async def socket_stack(database_url: str, *, watchdog: float = 30.0) -> AsyncIterator[Stack]:
    standins = await socket_standins()
    desk = socket_desk(standins, database_url, standins.desk_port, watchdog=watchdog)  # type: ignore[attr-defined]
    await desk.start()
    try:
        assert await standins.slack.socket.wait_for_connections(1), "the desk never connected"
        yield Stack(standins, desk, database_url)
    finally:
        await desk.stop()
        await standins.stop()


async def _async(value: bool) -> bool:
    return value


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def _inbox_rows(stack: Stack, external_id: str) -> int:
    async with stack.sessions() as s:
        count = await s.scalar(
            select(func.count())
            .select_from(InboxRow)
            .where(InboxRow.channel == "slack", InboxRow.external_id == external_id)
        )
    return int(count or 0)


def _event_ids(standins: StandIns, ts: str) -> list[dict[str, Any]]:
    """The envelopes the stand-in sent for the agent message ``ts``."""
    return [
        {"envelope": e.envelope_id, "event_id": e.payload.get("event_id"), "retry": e.retry_attempt}
        | {"acked": e.acked}
        for e in standins.slack.socket.envelopes
        if e.type == "events_api" and (e.payload.get("event") or {}).get("ts") == ts
    ]


async def _card_claimed(stack: Stack, customer: int, text: str) -> dict[str, Any]:
    tg = stack.standins.telegram
    await tg.customer_says(customer, text, first_name="Ann")
    card = await stack.card()
    assert (
        await stack.standins.slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE")
        == 200
    )

    async def claimed() -> bool:
        return "Claimed by *Alice*" in json.dumps(stack.cards()[0]["blocks"])

    await eventually(claimed, "the card to show the claim")
    return card


async def test_whole_loop_over_socket_mode(database_url: str) -> None:
    async with socket_stack(database_url) as stack:
        tg, slack = stack.standins.telegram, stack.standins.slack
        card = await _card_claimed(stack, 42, "My order #A17 never arrived")
        assert "My order #A17 never arrived" in json.dumps(card["blocks"])

        reply_ts = await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "It ships today.")
        sent = await tg.wait_for_sent(42, 2)
        assert sent[1]["text"] == "It ships today."

        async def confirmed() -> bool:
            return "white_check_mark" in slack.reactions(SUPPORT, reply_ts)

        await eventually(confirmed, "the ✅ on the relayed reply")
        # The click and the reply came as envelopes, each acknowledged.
        kinds = [(e.type, e.acked) for e in slack.socket.envelopes]
        assert ("interactive", True) in kinds and ("events_api", True) in kinds

        # No Slack endpoint is served at all, and /healthz and /metrics show the socket.
        status, _ = await _get(f"{stack.desk.url}/slack/events")
        assert status in (404, 405)
        url = f"{stack.desk.url}/slack/events"
        async with aiohttp.ClientSession() as http, http.post(url, data=b"{}") as resp:
            assert resp.status == 404
        status, body = await _get(f"{stack.desk.url}/healthz")
        health = json.loads(body)
        assert status == 200, health
        assert health["slack_socket"]["state"] == "connected"
        status, metrics = await _get(f"{stack.desk.url}/metrics")
        assert "deskbot_slack_socket_connected 1.0" in metrics

        # A slash command goes the same way and gets its answer through response_url.
        answer = await slack.slash_command("/desk", "queue", "U0ALICE", SUPPORT)
        assert answer and any(a.get("text") or a.get("blocks") for a in answer)

        # The Home tab, a modal (History, then its note submitted) and a message shortcut go
        # the same way too.
        assert await slack.opens_home("U0ALICE") == 200
        await eventually(lambda: _async("U0ALICE" in slack.homes), "Alice's Home published")
        await slack.agent_clicks(SUPPORT, card["ts"], "ticket_history", "U0ALICE")

        async def history() -> str | None:
            modal = slack.modal_of("U0ALICE")
            if modal is None or "customer c1" not in slack.modal_text(modal["id"]):
                return None
            return str(modal["id"])

        view_id = await eventually(history, "the History modal filled")
        await slack.types_in_modal(view_id, "Prefers short answers.")
        status, body = await slack.submits_modal(view_id)
        assert (status, body.strip()) == (200, "")
        await stack.thread_has(card["ts"], "updated the note about this customer")
        desks_own = next(m for m in slack.thread(SUPPORT, card["ts"]) if m.get("bot_id"))
        assert await slack.message_shortcut(SUPPORT, desks_own["ts"], "U0ALICE") == 200

        async def refused() -> list[str] | None:
            return slack.ephemerals("U0ALICE") or None

        await eventually(refused, "the shortcut's private answer")
        acked = {e.type for e in slack.socket.envelopes if e.acked}
        assert acked == {"events_api", "interactive", "slash_commands"}


async def test_event_while_the_socket_is_being_refreshed(database_url: str) -> None:
    async with socket_stack(database_url) as stack:
        tg, slack = stack.standins.telegram, stack.standins.slack
        card = await _card_claimed(stack, 43, "Where is my parcel?")
        before = slack.socket.opened_total
        # Slack rotates the connection and, at that very moment, an agent answers.
        refreshed = time.monotonic()
        await slack.socket.refresh()
        reply_ts = await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Out for delivery.")
        print(f"event acknowledged {time.monotonic() - refreshed:.2f} s after the disconnect")
        sent = await tg.wait_for_sent(43, 2)
        assert sent[1]["text"] == "Out for delivery."
        assert slack.socket.opened_total > before  # delivered on the new connection
        envelopes = _event_ids(stack.standins, reply_ts)
        assert envelopes and envelopes[-1]["acked"]
        assert await _inbox_rows(stack, envelopes[0]["event_id"]) == 1

        async def counted() -> str | None:
            _, metrics = await _get(f"{stack.desk.url}/metrics")
            line = 'deskbot_slack_socket_reconnects_total{reason="refresh_requested"} 1.0'
            return line if line in metrics else None

        await eventually(counted, "the reconnect in /metrics")
        _, body = await _get(f"{stack.desk.url}/healthz")
        assert json.loads(body)["slack_socket"]["reconnects"] == {"refresh_requested": 1}


async def test_lost_ack_is_redelivered_and_stored_once(database_url: str) -> None:
    async with socket_stack(database_url) as stack:
        tg, slack = stack.standins.telegram, stack.standins.slack
        card = await _card_claimed(stack, 44, "Refund please")
        slack.socket.drop_acks = 1  # the desk's ack for the next envelope is lost
        reply_ts = await slack.agent_replies(
            SUPPORT, card["ts"], "U0ALICE", "Refund is on its way."
        )

        async def redelivered() -> list[dict[str, Any]] | None:
            found = _event_ids(stack.standins, reply_ts)
            return found if len(found) >= 2 and found[-1]["acked"] else None

        envelopes = await eventually(redelivered, "Slack's retry, acknowledged")
        # A new envelope for the same event: its retry_attempt says so, its event_id does not
        # change, and the inbox keeps it once.
        assert envelopes[0]["envelope"] != envelopes[1]["envelope"]
        assert [e["retry"] for e in envelopes[:2]] == [0, 1]
        assert envelopes[0]["event_id"] == envelopes[1]["event_id"]
        assert await _inbox_rows(stack, envelopes[0]["event_id"]) == 1
        await stack.outbox_idle()
        replies = [m for m in tg.sent_to(44) if m.get("text") == "Refund is on its way."]
        assert len(replies) == 1
        async with stack.sessions() as s:
            out = await s.scalar(
                select(func.count()).select_from(Message).where(Message.direction == "out")
            )
        assert out == 1


async def test_silent_socket_is_replaced_by_the_watchdog(database_url: str) -> None:
    async with socket_stack(database_url, watchdog=2.0) as stack:
        tg, slack = stack.standins.telegram, stack.standins.slack
        card = await _card_claimed(stack, 45, "Nothing works")
        before = slack.socket.opened_total
        silenced = time.monotonic()
        slack.socket.silence()  # open, but dead: no pong, nothing read
        assert await slack.socket.wait_for_new_connection(before, timeout=10), (
            "the watchdog did not replace the silent connection"
        )
        print(f"silent connection replaced after {time.monotonic() - silenced:.2f} s (bound 2 s)")
        await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Fixed now.")
        sent = await tg.wait_for_sent(45, 2)
        assert sent[1]["text"] == "Fixed now."
        assert stack.desk.adapters  # the desk still runs
        _, body = await _get(f"{stack.desk.url}/healthz")
        reconnects = json.loads(body)["slack_socket"]["reconnects"]
        assert reconnects.get("watchdog", 0) >= 1, reconnects


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_two_processes_each_event_once(database_url: str) -> None:
    """Several desk processes share a database on PostgreSQL (SQLite serves one process)."""
    standins = await socket_standins()
    port_a: int = standins.desk_port  # type: ignore[attr-defined]
    a = socket_desk(standins, database_url, port_a)
    b = socket_desk(standins, database_url, free_port())
    # The second desk only holds a Slack connection (Telegram allows one poller per bot).
    b.settings = dataclasses.replace(b.settings, telegram=None)
    await a.start()
    await b.start()
    try:
        assert await standins.slack.socket.wait_for_connections(2)
        stack = Stack(standins, a, database_url)
        # The customer writes on WhatsApp, which both desks can answer on.
        wa = standins.whatsapp
        await wa.customer_says("15550100046", "Two desks, one answer", name="Ann")
        card = await stack.card()
        slack = standins.slack
        assert await slack.agent_clicks(SUPPORT, card["ts"], "ticket_claim", "U0ALICE") == 200

        async def claimed() -> bool:
            return "Claimed by *Alice*" in json.dumps(stack.cards()[0]["blocks"])

        await eventually(claimed, "the card to show the claim")
        # Each desk holds a connection; Slack takes turns. One ack is lost, so that event is
        # delivered again, in a new envelope, maybe to the other process.
        slack.socket.drop_acks = 1
        texts = [f"answer {n}" for n in range(4)]
        stamps = [await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", text) for text in texts]

        def relayed() -> list[str]:
            sent = wa.sent_to("15550100046")
            return [str((m.get("text") or {}).get("body")) for m in sent if m.get("type") == "text"]

        async def all_sent() -> bool:
            return all(t in relayed() for t in texts)

        await eventually(all_sent, "every answer relayed", timeout=20)
        await stack.outbox_idle()
        assert [t for t in relayed() if t in texts] == texts  # each once, in order
        used = {e.connection for e in standins.slack.socket.envelopes if e.acked}
        assert len(used) == 2, "both processes' connections carried envelopes"
        for ts in stamps:
            envelopes = _event_ids(standins, ts)
            assert await _inbox_rows(stack, envelopes[0]["event_id"]) == 1
        assert any(len(_event_ids(standins, ts)) == 2 for ts in stamps)
    finally:
        await b.stop()
        await a.stop()
        await standins.stop()


async def test_an_envelope_is_acked_only_after_the_inbox_stored_it(database_url: str) -> None:
    async with socket_stack(database_url) as stack:
        tg, slack = stack.standins.telegram, stack.standins.slack
        card = await _card_claimed(stack, 47, "Is anyone there?")
        inbox = stack.desk.inbox
        assert inbox is not None
        real = inbox.accept
        failures = 1

        async def failing(events: Any, raw: Any) -> int:
            nonlocal failures
            if failures:
                failures -= 1
                raise ConnectionError("the database went away")
            return await real(events, raw)

        inbox.accept = failing  # type: ignore[method-assign]
        reply_ts = await slack.agent_replies(SUPPORT, card["ts"], "U0ALICE", "Yes, here.")

        async def stored() -> list[dict[str, Any]] | None:
            found = _event_ids(stack.standins, reply_ts)
            return found if len(found) >= 2 and found[-1]["acked"] else None

        envelopes = await eventually(stored, "the retry, stored and acknowledged")
        assert not envelopes[0]["acked"]  # not stored → not acknowledged
        assert await _inbox_rows(stack, envelopes[0]["event_id"]) == 1
        sent = await tg.wait_for_sent(47, 2)
        assert sent[1]["text"] == "Yes, here."


async def test_a_refused_app_token_stops_the_start_in_one_line(database_url: str) -> None:
    standins = await socket_standins()
    desk = socket_desk(standins, database_url, standins.desk_port)  # type: ignore[attr-defined]
    assert desk.settings.slack is not None
    wrong = "xapp-1-A0DESKBOT-not-the-token"
    desk.settings = dataclasses.replace(
        desk.settings, slack=dataclasses.replace(desk.settings.slack, app_token=wrong)
    )
    try:
        with pytest.raises(StartupError) as refused:  # `deskbot run`: one line, exit 2
            await desk.start()
        assert str(refused.value) == (
            "Slack refused SLACK_APP_TOKEN at apps.connections.open: invalid_auth"
        )
        assert wrong not in str(refused.value)
    finally:
        await desk.stop()
        await standins.stop()
