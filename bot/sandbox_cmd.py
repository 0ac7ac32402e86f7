"""``deskbot sandbox``: the real desk against loopback stand-ins, with no accounts at all.

This is the only place the product imports ``sandbox/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from bot.cli import serve
from bot.rules import Rules, load_rules, parse_rules
from bot.settings import (
    Settings,
    SlackSettings,
    TelegramSettings,
    WhatsAppSettings,
    load_settings,
)
from sandbox import StandIns


def sandbox_settings(standins: StandIns, *, desk_port: int, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        http_host="127.0.0.1",
        http_port=desk_port,
        model=os.environ.get("DESK_MODEL") or "local",
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


def banner(standin_url: str, desk_url: str, db: str) -> str:
    c = f"{standin_url}/control"
    return f"""
deskbot sandbox is running: the real desk, with pretend Telegram, WhatsApp and Slack.

  Play both sides in a browser:  {standin_url}/
  The desk:                      {desk_url}   ({desk_url}/healthz, {desk_url}/metrics)
  Its database:                  {db}

Or with curl:
  # a Telegram customer writes
  curl -s {c}/telegram/customer_says -d '{{"chat_id": 42, "text": "My order never came"}}'
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

Ctrl-C stops it.
"""


async def run_sandbox(*, desk_port: int, standin_port: int) -> None:
    desk_url = f"http://127.0.0.1:{desk_port}"
    standins = StandIns.for_sandbox(desk_url)
    standin_url = await standins.start(port=standin_port)
    try:
        db = (
            load_settings().database_url
            if os.environ.get("DESK_DATABASE_URL")
            else (f"sqlite+aiosqlite:///{Path.cwd() / 'deskbot-sandbox.db'}")
        )
        settings = sandbox_settings(standins, desk_port=desk_port, database_url=db)
        await serve(settings, _rules(), banner=banner(standin_url, desk_url, db))
    finally:
        await standins.stop()
