"""A running desk against the stand-ins over real HTTP, with the real client libraries."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters import slack_people
from bot.app import DeskApp
from bot.base.clock import Clock
from bot.base.settings import Settings, SlackSettings, TelegramSettings, WhatsAppSettings
from bot.domain.classifier import Classifier
from bot.domain.rules import Rules, load_rules
from bot.selfservice.kb import KnowledgeBase
from sandbox import StandIns
from sandbox.ports import free_port as free_port
from storage.crypto import Keyring
from storage.models import InboxRow, OutboxRow, Ticket

ROOT = Path(__file__).parent.parent.parent
RULES = load_rules(ROOT / "rules.yaml")
T = TypeVar("T")

TELEGRAM_TOKEN = "123456789:AAE2e-test-token_abcdefghijklmnopqrst"
WA_TOKEN = "EAAG-test-access-token"
WA_PHONE_ID = "106540352242922"
WA_SECRET = "wa-app-secret"
WA_VERIFY = "wa-verify-token"
SLACK_TOKEN = "xoxb-1-e2e-test"
SLACK_SECRET = "slack-signing-secret"
SUPPORT = "C0SUPPORT"


@pytest.fixture(autouse=True)
def patient_name_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent's display name is asked of Slack (users.info) within 1.5 s, so that Slack's
    3-second acknowledgement is never missed for it; past that the desk writes the payload's
    user name. The stand-in answering it here shares the test's event loop and a loaded CI
    machine's two cores, and once took longer than 1.5 s, so a card line said "bob" where the
    test reads "Bob". These tests are about what the desk does with the name, not the bound."""
    monkeypatch.setattr(slack_people, "LOOKUP_TIMEOUT", 10.0)


def desk_settings(
    standins: StandIns, database_url: str, port: int, *, telegram_webhook: str | None = None
) -> Settings:
    return Settings(
        database_url=database_url,
        http_host="127.0.0.1",
        http_port=port,
        telegram=TelegramSettings(
            bot_token=TELEGRAM_TOKEN,
            api_base=standins.telegram_api_base,
            poll_timeout=1,
            webhook_url=telegram_webhook,
            webhook_secret="tg-secret_1" if telegram_webhook else None,
        ),
        whatsapp=WhatsAppSettings(
            access_token=WA_TOKEN,
            phone_number_id=WA_PHONE_ID,
            app_secret=WA_SECRET,
            verify_token=WA_VERIFY,
            api_base=standins.whatsapp_api_base,
        ),
        slack=SlackSettings(
            bot_token=SLACK_TOKEN, signing_secret=SLACK_SECRET, api_base=standins.slack_api_base
        ),
    )


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` otherwise. The
    default wait bounds a hang and measures nothing: with three test workers on two cores a
    chain of a Slack event, a step and an outbox call once took longer than 10 s in CI."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Stack:
    standins: StandIns
    desk: DeskApp
    database_url: str

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        assert self.desk.sessions is not None
        return self.desk.sessions

    def cards(self) -> list[dict[str, Any]]:
        """Ticket cards in every team's channel, oldest first (each with its ``channel``)."""
        slack = self.standins.slack
        found = [
            {**m, "channel": channel}
            for channel in slack.channels
            for m in slack.messages(channel)
            if m.get("blocks")
        ]
        return sorted(found, key=lambda m: tuple(int(x) for x in m["ts"].split(".")))

    def channel_of(self, ts: str) -> str:
        return next((c["channel"] for c in self.cards() if c["ts"] == ts), SUPPORT)

    async def card(self, n: int = 1) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            cards = self.cards()
            return cards[n - 1] if len(cards) >= n else None

        return await eventually(probe, f"ticket card #{n} in Slack")

    async def thread_has(self, ts: str, needle: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The thread's messages containing ``needle``, once there are any. The wait is long
        because a thread line may come at the end of a chain (a send, a platform's status
        webhook, a template, then Slack's pace of about one post a second per channel) that a
        loaded CI machine stretches past 10 s; it bounds a hang, it measures nothing."""

        async def probe() -> list[dict[str, Any]]:
            thread = self.standins.slack.thread(self.channel_of(ts), ts)
            return [m for m in thread if needle in m["text"]]

        return await eventually(probe, f"{needle!r} in the card's thread", timeout)

    async def outbox_idle(self) -> None:
        """Wait until every inbox event is processed and every outbox row is settled (the
        App Home's, which wait out a debounce, too)."""

        async def probe() -> bool:
            async with self.sessions() as s:
                busy_in = await s.scalar(
                    select(InboxRow.id).where(InboxRow.status.in_(("pending", "processing")))
                )
                busy_out = await s.scalar(
                    select(OutboxRow.id).where(OutboxRow.status.in_(("pending", "sending")))
                )
            return busy_in is None and busy_out is None

        await eventually(probe, "the inbox and the outbox to settle")

    async def ticket(self, ticket_id: int = 1) -> Ticket:
        async with self.sessions() as s:
            t = await s.scalar(select(Ticket).where(Ticket.id == ticket_id))
            assert t is not None
            return t


async def start_standins(*, rate_limits: bool = True) -> StandIns:
    port = free_port()
    standins = StandIns(
        desk_url=f"http://127.0.0.1:{port}",
        telegram_token=TELEGRAM_TOKEN,
        whatsapp_access_token=WA_TOKEN,
        whatsapp_phone_number_id=WA_PHONE_ID,
        whatsapp_app_secret=WA_SECRET,
        slack_bot_token=SLACK_TOKEN,
        slack_signing_secret=SLACK_SECRET,
        rate_limits=rate_limits,
        retry_base_delay=0.05,
    )
    await standins.start()
    standins.desk_port = port  # type: ignore[attr-defined]
    return standins


@asynccontextmanager
async def running_stack(
    database_url: str,
    *,
    telegram_webhook: str | None = None,
    classifier: Classifier | None = None,
    rules: Rules = RULES,
    knowledge: KnowledgeBase | None = None,
    clock: Clock | None = None,
    data_keys: Keyring | None = None,
) -> AsyncIterator[Stack]:
    """Stand-ins and a started desk on ``database_url``; both stopped on the way out.

    ``telegram_webhook`` is a path on the desk (``/telegram/webhook``) for webhook mode.
    ``clock``: the desk's (the stand-ins keep their own unless the test links them).
    ``data_keys``: encryption at rest (storage/crypto.py); None, customers' data in clear.
    """
    standins = await start_standins()
    port: int = standins.desk_port  # type: ignore[attr-defined]
    hook = f"http://127.0.0.1:{port}{telegram_webhook}" if telegram_webhook else None
    settings = desk_settings(standins, database_url, port, telegram_webhook=hook)
    settings = dataclasses.replace(settings, data_keys=data_keys)
    desk = DeskApp(
        settings, rules, classifier=classifier, idle_poll=0.05, knowledge=knowledge, clock=clock
    )
    await desk.start()
    try:
        yield Stack(standins, desk, database_url)
    finally:
        await desk.stop()
        await standins.stop()


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    async with running_stack(database_url) as running:
        yield running
