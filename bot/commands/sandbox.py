"""``deskbot sandbox``: the real desk against loopback stand-ins, with no accounts at all.

This is the only place the product imports ``sandbox/``.

A second ``deskbot sandbox`` continues the first: the database stays, the stand-ins reload
their chats and channels from a state file beside it, and (whether that file is there or not)
they carry on after every platform id the database already holds, as the real platforms never
hand out an id twice. ``--fresh`` removes both and starts from nothing.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bot.app import serve
from bot.base.clock import OffsetClock
from bot.base.settings import (
    Settings,
    SlackSettings,
    TelegramSettings,
    WhatsAppSettings,
    load_settings,
)
from bot.domain.rules import Rules, load_rules, parse_rules
from sandbox import DeskHistory, StandIns
from storage.db import create_engine, migrate, session_factory
from storage.models import Customer, Identity, InboxRow, Message, OutboxRow, Ticket

DEFAULT_DB = "deskbot-sandbox.db"
STATE_SUFFIX = ".standins.json"


class FreshRefused(RuntimeError):
    """--fresh was asked for a database the sandbox does not own."""


def sandbox_settings(standins: StandIns, *, desk_port: int, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        http_host="127.0.0.1",
        http_port=desk_port,
        model=os.environ.get("DESK_MODEL") or "local",
        rules_path=Path(os.environ.get("DESK_RULES") or "rules.yaml"),
        telegram=TelegramSettings(
            bot_token=standins.telegram_token,
            api_base=standins.telegram_api_base,
            poll_timeout=10,
        ),
        whatsapp=WhatsAppSettings(
            access_token=standins.whatsapp_access_token,
            phone_number_id=standins.whatsapp_phone_number_id,
            app_secret=standins.whatsapp_app_secret,
            verify_token="sandbox-verify",
            api_base=standins.whatsapp_api_base,
        ),
        slack=SlackSettings(
            bot_token=standins.slack_bot_token,
            signing_secret=standins.slack_signing_secret,
            api_base=standins.slack_api_base,
        ),
    )


def _rules() -> Rules:
    path = Path(os.environ.get("DESK_RULES") or "rules.yaml")
    return load_rules(path) if path.exists() else parse_rules({"version": 1})


@dataclass(frozen=True)
class SandboxFiles:
    database_url: str
    database_file: Path | None  # the SQLite file, when the sandbox owns it
    state_file: Path

    @property
    def shown(self) -> str:
        return str(self.database_file) if self.database_file else _hide_password(self.database_url)


def sandbox_files(cwd: Path | None = None) -> SandboxFiles:
    """The default SQLite file in the working folder, or ``DESK_DATABASE_URL`` if set.

    The stand-ins' state file sits beside the SQLite file, or in the working folder named after
    the database, so that two databases never share one.
    """
    cwd = cwd or Path.cwd()
    if os.environ.get("DESK_DATABASE_URL"):
        url = load_settings().database_url
        tag = hashlib.sha256(url.encode()).hexdigest()[:8]
        return SandboxFiles(url, None, cwd / f"deskbot-sandbox-{tag}{STATE_SUFFIX}")
    db = cwd / DEFAULT_DB
    return SandboxFiles(f"sqlite+aiosqlite:///{db}", db, db.with_suffix(STATE_SUFFIX))


def _hide_password(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def remove_sandbox(files: SandboxFiles) -> list[Path]:
    """``--fresh``: delete the sandbox's own database (with its WAL files) and state file."""
    if files.database_file is None:
        raise FreshRefused(
            "--fresh only deletes the sandbox's own database file; DESK_DATABASE_URL is set, "
            "so empty that database yourself (or unset it to use ./deskbot-sandbox.db)"
        )
    db = files.database_file
    candidates = [
        db,
        db.with_name(db.name + "-wal"),
        db.with_name(db.name + "-shm"),
        db.with_name(db.name + "-journal"),
        files.state_file,
        files.state_file.with_name(files.state_file.name + ".tmp"),
    ]
    removed = []
    for path in candidates:
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def _ints(values: Any) -> list[str]:
    return [str(v) for v in values if isinstance(v, int)]


def _telegram_message_ids(raw: Any) -> list[str]:
    """Message ids inside a stored Telegram update: the message, an edit, a pressed button's."""
    if not isinstance(raw, dict):
        return []
    found: list[Any] = []
    for key in ("message", "edited_message", "channel_post"):
        if isinstance(raw.get(key), dict):
            found.append(raw[key].get("message_id"))
    query = raw.get("callback_query")
    if isinstance(query, dict) and isinstance(query.get("message"), dict):
        found.append(query["message"].get("message_id"))
    return _ints(found)


async def desk_history(database_url: str) -> DeskHistory:
    """Every platform id and conversation the desk's database holds, for the stand-ins."""
    engine = create_engine(database_url)
    try:
        await migrate(engine)  # a fresh database gets its tables; the desk would do it anyway
        history = DeskHistory()
        async with session_factory(engine)() as s:
            inbox = (
                await s.execute(select(InboxRow.channel, InboxRow.external_id, InboxRow.raw))
            ).all()
            for channel, external_id, raw in inbox:
                if channel == "telegram":
                    history.telegram_update_ids.append(external_id)
                    history.telegram_message_ids += _telegram_message_ids(raw)
                elif channel == "whatsapp":
                    history.whatsapp_ids.append(external_id)
                elif channel == "slack":
                    history.slack_ids.append(external_id)
            sent = (
                await s.execute(
                    select(OutboxRow.channel, OutboxRow.platform_message_id).where(
                        OutboxRow.platform_message_id.is_not(None)
                    )
                )
            ).all()
            recorded = (
                await s.execute(
                    select(Message.channel, Message.platform_message_id).where(
                        Message.platform_message_id.is_not(None)
                    )
                )
            ).all()
            for channel, pid in [*sent, *recorded]:
                if pid is None:
                    continue
                {
                    "telegram": history.telegram_message_ids,
                    "whatsapp": history.whatsapp_ids,
                    "slack": history.slack_ids,
                }.get(channel, []).append(pid)
            for column in (Ticket.slack_ts, Message.slack_ts):
                history.slack_ids += [ts for ts in (await s.scalars(select(column))).all() if ts]
            people = (
                await s.execute(
                    select(Identity.channel, Identity.chat_id, Customer.name).join(
                        Customer, Customer.id == Identity.customer_id
                    )
                )
            ).all()
            for channel, chat_id, name in people:
                if channel == "telegram" and chat_id.lstrip("-").isdigit():
                    history.telegram_chats[int(chat_id)] = name
                elif channel == "whatsapp":
                    history.whatsapp_names[chat_id] = name
            last_wrote = (
                await s.execute(
                    select(InboxRow.conversation, func.max(InboxRow.received_at))
                    .where(
                        InboxRow.channel == "whatsapp",
                        InboxRow.kind.in_(("customer_message", "customer_button")),
                    )
                    .group_by(InboxRow.conversation)
                )
            ).all()
            for conversation, at in last_wrote:
                wa_id = conversation.removeprefix("whatsapp:")
                history.whatsapp_last_inbound[wa_id] = at.timestamp()
        return history
    finally:
        await engine.dispose()


def banner(standin_url: str, desk_url: str, db: str, *, story: str = "") -> str:
    c = f"{standin_url}/control"
    return f"""
deskbot sandbox is running: the real desk, with pretend Telegram, WhatsApp and Slack.
{story}
  Play both sides in a browser:  {standin_url}/
  The desk:                      {desk_url}   ({desk_url}/healthz, {desk_url}/metrics)
  Its database:                  {db}

Or with curl:
  # a Telegram customer writes
  curl -s {c}/telegram/customer_says -d '{{"chat_id": 42, "text": "My order arrived damaged"}}'
  # the ticket card in #support (note its ts), and the customer's chat
  curl -s {c}/slack/messages?channel=C0SUPPORT
  curl -s {c}/telegram/sent?chat_id=42
  # alice claims it, answers in the card's thread, then resolves it
  curl -s {c}/slack/agent_clicks -d '{{"channel": "C0SUPPORT", "message_ts": "TS", \\
       "action_id": "ticket_claim", "user": "U0ALICE"}}'
  curl -s {c}/slack/agent_replies -d '{{"channel": "C0SUPPORT", "thread_ts": "TS", \\
       "user": "U0ALICE", "text": "Sorry! It ships today."}}'
  curl -s {c}/slack/agent_clicks -d '{{"channel": "C0SUPPORT", "message_ts": "TS", \\
       "action_id": "ticket_resolve", "user": "U0ALICE"}}'
  # a WhatsApp customer writes
  curl -s {c}/whatsapp/customer_says -d '{{"wa_id": "15551234567", "text": "Hi there"}}'
  # a question the knowledge base (kb/) answers, with "That solved it" / "Talk to a person";
  # MID and the button's data (kb:solved:N) are in /telegram/sent?chat_id=43
  curl -s {c}/telegram/customer_says -d '{{"chat_id": 43, \\
       "text": "how do I cancel my subscription?"}}'
  curl -s {c}/telegram/customer_presses -d '{{"chat_id": 43, "message_id": MID, \\
       "data": "kb:solved:N"}}'

Ctrl-C stops it; `make sandbox` again continues where you left off.
"""


async def _ticket_count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as s:
            return int(await s.scalar(select(func.count()).select_from(Ticket)) or 0)
    finally:
        await engine.dispose()


def _story(files: SandboxFiles, *, removed: list[Path], tickets: int, loaded: bool) -> str:
    """What the banner says about where this sandbox came from."""
    if tickets == 0 and not loaded:
        gone = f" (removed {', '.join(p.name for p in removed)})" if removed else ""
        return f"\nStarted a fresh sandbox{gone}.\n"
    where = (
        f"chats and channels from {files.state_file.name}"
        if loaded
        else f"no {files.state_file.name}, so the pretend chats and channels start empty"
    )
    return (
        f"\nContinuing the sandbox in {files.shown}: {tickets} ticket(s) so far; {where}.\n"
        "  Start from scratch instead: make sandbox ARGS=--fresh  (deskbot sandbox --fresh)\n"
    )


async def run_sandbox(*, desk_port: int, standin_port: int, fresh: bool = False) -> None:
    started = time.monotonic()
    files = sandbox_files()
    removed = remove_sandbox(files) if fresh else []
    desk_url = f"http://127.0.0.1:{desk_port}"
    standins = StandIns.for_sandbox(desk_url, state_path=files.state_file)
    history = await desk_history(files.database_url)
    tickets = await _ticket_count(files.database_url)
    standin_url = await standins.start(port=standin_port)
    # After loading the state file: its counters may lag the database (saved a moment late).
    standins.continue_after(history)
    # The page's fast-forward moves the desk's clock, so SLA warnings show within a minute.
    clock = OffsetClock()

    def advance(minutes: float) -> float:
        clock.advance(minutes=minutes)
        return clock.offset.total_seconds() / 60

    standins.advance_clock = advance
    try:
        settings = sandbox_settings(standins, desk_port=desk_port, database_url=files.database_url)
        story = _story(files, removed=removed, tickets=tickets, loaded=standins.continued)
        await serve(
            settings,
            _rules(),
            banner=banner(standin_url, desk_url, files.shown, story=story),
            started=started,
            clock=clock,
        )
    finally:
        await standins.stop()
