"""Files from the desk into Slack, over real HTTP against the stand-ins: the charts of
``/desk stats`` in the channel where it was typed."""

from __future__ import annotations

import csv
import io
from typing import Any

from PIL import Image
from sqlalchemy import select

from storage.models import AuditEntry, OutboxRow

from .conftest import SUPPORT, Stack, eventually

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHARTS = ["created.png", "first_response.png", "csat.png", "agents.png"]


def shared_in(stack: Stack, channel: str) -> list[dict[str, Any]]:
    return [m for m in stack.standins.slack.messages(channel) if m.get("files")]


async def test_stats_uploads_the_four_charts_into_the_channel_it_was_typed_in(
    stack: Stack,
) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(7, "Where is my parcel?", first_name="Ann")
    card = await stack.card()
    await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "It left the warehouse today.")
    await tg.wait_for_sent(7, 2)

    responses = await slack.slash_command("/desk", "stats 7d", "U0CAROL", SUPPORT)
    assert any("Desk figures" in str(r.get("text")) for r in responses)

    async def posted() -> list[dict[str, Any]]:
        return shared_in(stack, SUPPORT)

    message = (await eventually(posted, "the charts shared in the support channel"))[0]
    assert message["text"].startswith("Desk figures ")
    assert "charts for <@U0CAROL>" in message["text"]
    assert [f["name"] for f in message["files"]] == CHARTS
    for shared in message["files"]:
        stored = slack.files[shared["id"]]
        assert stored["channels"] == [SUPPORT]
        png: bytes = stored["content"]
        assert png.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG"
            assert image.size == (800, 420)  # 8 × 4.2 inches at 100 dpi
            # Drawn, not blank: a chart has more than a handful of colours.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10
    # Only the channel where the command was typed got them.
    assert all(not shared_in(stack, c) for c in slack.channels if c != SUPPORT)


async def outbox_kinds(stack: Stack) -> list[str]:
    async with stack.sessions() as s:
        payloads = (await s.scalars(select(OutboxRow.payload).order_by(OutboxRow.id))).all()
        return [str(p["kind"]) for p in payloads]


async def test_a_refused_stats_queues_no_charts(stack: Stack) -> None:
    responses = await stack.standins.slack.slash_command("/desk", "stats 7d", "U0BOB", SUPPORT)
    assert any("for supervisors only" in str(r.get("text")) for r in responses)
    # The answer arrived, so its step committed: everything it queued is in the outbox.
    assert "slack_charts" not in await outbox_kinds(stack)
    assert not stack.standins.slack.files


async def test_export_sends_the_tickets_csv_to_the_supervisors_dm_and_audits_it(
    stack: Stack,
) -> None:
    tg, slack = stack.standins.telegram, stack.standins.slack
    await tg.customer_says(7, "Where is my parcel?", first_name="Ann")
    card = await stack.card()
    await slack.agent_replies(SUPPORT, card["ts"], "U0BOB", "It left the warehouse today.")
    await tg.wait_for_sent(7, 2)
    await tg.customer_says(8, "My invoice is wrong", first_name="Ben")
    await stack.card(2)

    responses = await slack.slash_command("/desk", "export 7d", "U0CAROL", SUPPORT)
    told = " ".join(str(r.get("text")) for r in responses)
    assert "Exporting 2 tickets created" in told
    dm = slack.dm_channel("U0CAROL")

    async def delivered() -> list[dict[str, Any]]:
        return shared_in(stack, dm)

    message = (await eventually(delivered, "the CSV in Carol's DM with the app"))[0]
    (shared,) = message["files"]
    assert shared["name"].startswith("tickets-") and shared["name"].endswith(".csv")
    assert "Tickets created" in shared["title"]
    content: bytes = slack.files[shared["id"]]["content"]
    rows = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
    assert [r["ticket"] for r in rows] == ["1", "2"]
    assert [r["customer"] for r in rows] == ["c1", "c2"]  # as History and the audit name them
    first = await stack.ticket(1)
    assert rows[0]["platform"] == "telegram" and rows[0]["chat"] == "7"
    assert rows[0]["slack_channel"] == SUPPORT and rows[0]["slack_ts"] == card["ts"]
    assert rows[0]["assignee"] == "U0BOB"
    assert first.first_response_at is not None
    assert rows[0]["first_response"] == first.first_response_at.isoformat(timespec="seconds")
    assert rows[1]["first_response"] == "" and rows[1]["reopen_count"] == "0"
    # Nowhere else: not in the channel where the command was typed.
    assert not shared_in(stack, SUPPORT)
    async with stack.sessions() as s:
        entry = (await s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()))).first()
    assert entry is not None
    assert (entry.actor, entry.action, entry.target) == ("U0CAROL", "export", "/desk export 7d")
    assert entry.detail["tickets"] == 2


async def test_export_is_refused_to_a_non_supervisor_and_sends_nothing(stack: Stack) -> None:
    slack = stack.standins.slack
    responses = await slack.slash_command("/desk", "export", "U0BOB", SUPPORT)
    assert any(
        str(r.get("text")).startswith("`/desk export` is for supervisors only; nothing was done.")
        and r.get("response_type", "ephemeral") == "ephemeral"
        for r in responses
    )
    assert "slack_file" not in await outbox_kinds(stack)
    async with stack.sessions() as s:
        rows = (await s.scalars(select(AuditEntry))).all()
    assert [(r.actor, r.action, r.target) for r in rows] == [("U0BOB", "refused", "/desk export")]
    assert not slack.files
