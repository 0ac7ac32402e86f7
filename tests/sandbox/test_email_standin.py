"""The sandbox's email stand-in (sandbox/email.py): the desk's real email adapter reads its
loopback IMAP server and sends through its SMTP server, as ``deskbot sandbox`` wires them.

Asserted is what people would see: the card in Slack, the mail in the stand-in's sent list
with its threading headers, and the History modal's full original of a mail whose quoted
history the thread leaves out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aioimaplib
import pytest

from bot.app import DeskApp
from sandbox import StandIns
from sandbox.ports import free_port as _free_port
from tests.e2e.conftest import eventually
from tests.sandbox.running import running_sandbox

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = "C0SUPPORT"
ANNA = "anna@customer.test"


@dataclass
class Sandbox:
    standins: StandIns
    desk: DeskApp
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        async with self.http.request(method, self.standins.url + path, data=data) as resp:
            text = await resp.text()
            assert resp.status == 200, text
            return json.loads(text)

    async def card(self, n: int = 1) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            cards = [m for m in self.standins.slack.messages(SUPPORT) if m.get("blocks")]
            return cards[n - 1] if len(cards) >= n else None

        return await eventually(probe, f"card {n} in #support", 15)

    async def sent(self, n: int) -> list[dict[str, Any]]:
        async def probe() -> list[dict[str, Any]] | None:
            sent: list[dict[str, Any]] = await self.call("GET", f"/control/email/sent?to={ANNA}")
            return sent if len(sent) >= n else None

        return await eventually(probe, f"{n} mail(s) to {ANNA}", 15)

    async def thread_has(self, ts: str, needle: str) -> list[dict[str, Any]]:
        async def probe() -> list[dict[str, Any]]:
            thread = self.standins.slack.thread(SUPPORT, ts)
            return [m for m in thread if needle in m["text"]]

        return await eventually(probe, f"{needle!r} in the thread", 15)


@pytest.fixture
async def sandbox(database_url: str) -> AsyncIterator[Sandbox]:
    async with running_sandbox(database_url) as (standins, desk), aiohttp.ClientSession() as http:
        yield Sandbox(standins, desk, http)


async def test_a_customer_mail_becomes_a_card_and_the_agents_reply_threads_back(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mail.log")
    written = await sandbox.call(
        "POST",
        "/control/email/customer_writes",
        {"from": ANNA, "name": "Anna", "subject": "Order 55", "text": "Where is order 55?"},
    )
    card = await sandbox.card()
    blocks = json.dumps(card["blocks"], ensure_ascii=False)
    assert "Where is order 55?" in blocks
    assert f"📧 {ANNA} · “Order 55”" in blocks
    [ack] = await sandbox.sent(1)
    assert ack["subject"] == "Re: Order 55 [#1]"
    assert ack["in_reply_to"] == written["message_id"]
    assert ack["auto_submitted"] == "auto-replied"
    # The desk read the mail and flagged it \Seen on the stand-in's IMAP server.
    state = await sandbox.call("GET", "/control/state")
    assert [(m["subject"], m["seen"]) for m in state["email"]["received"]] == [("Order 55", True)]

    await sandbox.call(
        "POST",
        "/control/slack/agent_replies",
        {"channel": SUPPORT, "thread_ts": card["ts"], "user": "U0ALICE", "text": "It ships today."},
    )
    sent = await sandbox.sent(2)
    reply = sent[1]
    assert reply["text"].startswith("It ships today.")
    assert reply["subject"] == "Re: Order 55 [#1]"  # the [#N] token
    assert reply["in_reply_to"] == written["message_id"]
    assert written["message_id"] in reply["references"]
    assert reply["auto_submitted"] == ""  # a person wrote it
    assert reply["from"] == "Example Support <support@example.com>"

    # The customer answers the agent's mail: it threads onto the same card, quote stripped.
    answer = await sandbox.call(
        "POST",
        "/control/email/customer_writes",
        {"from": ANNA, "text": "Thanks, got it!", "in_reply_to": reply["message_id"]},
    )
    assert answer["subject"] == "Re: Order 55 [#1]"
    await sandbox.thread_has(card["ts"], "Thanks, got it!")
    thread = sandbox.standins.slack.thread(SUPPORT, card["ts"])
    assert not any("> It ships today." in m["text"] for m in thread)
    assert len([m for m in sandbox.standins.slack.messages(SUPPORT) if m.get("blocks")]) == 1
    # Two mails sent through the SMTP stand-in, and not a warning about how it was set up.
    assert any(r.name == "mail.log" for r in caplog.records)  # aiosmtpd did log its sessions
    assert [
        r.getMessage() for r in caplog.records if r.name == "mail.log" and r.levelno >= 30
    ] == []


async def test_the_history_modal_shows_the_quoted_history_the_thread_leaves_out(
    sandbox: Sandbox,
) -> None:
    await sandbox.call(
        "POST",
        "/control/email/customer_writes",
        {"from": ANNA, "subject": "Refund", "text": "I want a refund for order 77."},
    )
    card = await sandbox.card()
    [ack] = await sandbox.sent(1)
    await sandbox.call(
        "POST",
        "/control/email/customer_writes",
        {"from": ANNA, "text": "Any news on <this>?", "in_reply_to": ack["message_id"]},
    )
    await sandbox.thread_has(card["ts"], "Any news on")
    thread = sandbox.standins.slack.thread(SUPPORT, card["ts"])
    quoted = "> Thanks, we got your message"
    assert ack["text"].startswith("Thanks, we got your message")
    assert not any(quoted in m["text"] or "&gt; Thanks" in m["text"] for m in thread)

    await sandbox.call(
        "POST",
        "/control/slack/agent_clicks",
        {
            "channel": SUPPORT,
            "message_ts": card["ts"],
            "action_id": "ticket_history",
            "user": "U0ALICE",
        },
    )

    async def modal() -> str | None:
        view = sandbox.standins.slack.modal_of("U0ALICE")
        text = json.dumps(view["blocks"], ensure_ascii=False) if view else ""
        return text if "in full" in text else None

    shown = await eventually(modal, "the History modal with the mails in full", 15)
    # The reply's quoted history (the desk's acknowledgement, quoted by the mail program) is
    # in the modal, escaped for Slack, and the new text above it too.
    assert "&gt; Thanks, we got your message" in shown
    assert "Any news on &lt;this&gt;?" in shown
    assert "wrote:" in shown
    assert "I want a refund for order 77." in shown
    # Never as a visible post: the thread still has no quoted line.
    thread = sandbox.standins.slack.thread(SUPPORT, card["ts"])
    assert not any("&gt; Thanks" in m["text"] or quoted in m["text"] for m in thread)


@pytest.fixture
async def bare() -> AsyncIterator[StandIns]:
    """The stand-ins alone, no desk behind them."""
    standins = StandIns.for_sandbox(f"http://127.0.0.1:{_free_port()}", rate_limits=False)
    await standins.start()
    yield standins
    await standins.stop()


async def test_the_control_api_says_what_a_bad_mail_request_lacks(bare: StandIns) -> None:
    async with aiohttp.ClientSession() as http:

        async def post(body: dict[str, Any]) -> tuple[int, str]:
            url = bare.url + "/control/email/customer_writes"
            async with http.post(url, data=json.dumps(body)) as resp:
                return resp.status, await resp.text()

        status, text = await post({"from": "not an address", "text": "hi", "subject": "x"})
        assert status == 400 and text.startswith("from must be an address")
        status, text = await post({"from": ANNA, "text": "hi"})
        assert status == 400 and "subject is required for a new mail" in text
        status, text = await post({"from": ANNA, "text": "hi", "in_reply_to": "<nope@x>"})
        assert status == 400 and "the desk sent no mail with Message-ID <nope@x>" in text
        status, text = await post({"from": ANNA, "text": "hi", "subject": "Hello"})
        assert status == 200 and json.loads(text)["uid"] == 1


async def test_the_imap_server_refuses_a_wrong_password_and_reads_without_marking(
    bare: StandIns,
) -> None:

    box = bare.email
    await box.customer_writes(ANNA, "First", subject="One")
    client = aioimaplib.IMAP4("127.0.0.1", box.imap_port, timeout=5)
    await client.wait_hello_from_server()
    assert (await client.login(box.user, "wrong")).result == "NO"
    assert (await client.login(box.user, box.password)).result == "OK"
    selected = await client.select("INBOX")
    assert any(f"[UIDVALIDITY {box.uidvalidity}]".encode() in line for line in selected.lines)
    fetched = await client.uid("fetch", "1", "(UID BODY.PEEK[])")
    assert any(isinstance(x, bytearray) and b"First" in x for x in fetched.lines)
    assert box.mailbox[0].seen is False  # PEEK leaves it unread
    assert (await client.uid("store", "1", "+FLAGS.SILENT", r"(\Seen)")).result == "OK"
    assert box.mailbox[0].seen is True
    unseen = await client.uid_search("UNSEEN", charset=None)
    assert unseen.lines[0].strip() == b""
    await client.logout()


async def test_the_mailbox_and_sent_mail_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first = StandIns.for_sandbox("http://127.0.0.1:9", rate_limits=False, state_path=path)
    await first.start()
    await first.email.customer_writes(ANNA, "Kept?", subject="Across restarts")
    first.email.mailbox[0].seen = True
    validity = first.email.uidvalidity
    await first.stop()
    again = StandIns.for_sandbox("http://127.0.0.1:9", rate_limits=False, state_path=path)
    await again.start()
    try:
        [mail] = again.email.received()
        assert (mail["subject"], mail["seen"], mail["text"]) == ("Across restarts", True, "Kept?")
        assert again.email.uidvalidity == validity  # the desk's last-read UID still counts
        assert again.email.uidnext == 2
        assert again.email.password not in path.read_text()  # a made-up one per start
    finally:
        await again.stop()


async def test_a_stopped_desk_says_once_that_each_channel_stopped(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The desk stops its adapters twice (their intake first, their sessions after the last
    sends): each channel's "stopped" line is logged once, not twice."""
    caplog.set_level(logging.INFO)
    async with running_sandbox(database_url):
        pass  # started, then stopped
    said = [r.getMessage().split()[0] for r in caplog.records if ".stopped" in r.getMessage()]
    assert sorted(said) == [
        "desk.stopped",
        "email.stopped",
        "slack.stopped",
        "telegram.stopped",
        "whatsapp.stopped",
    ]
