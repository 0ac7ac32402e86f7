"""The desk builds all three adapters from its settings and mounts their routes side by side."""

from __future__ import annotations

from aiohttp import web

from bot.app import build_adapters
from bot.base.settings import Settings, SlackSettings, TelegramSettings, WhatsAppSettings

from .adapter_fakes import FakeInbox


async def test_build_and_install_all_three() -> None:
    settings = Settings(
        database_url="sqlite+aiosqlite:///:memory:",
        telegram=TelegramSettings(
            bot_token="123456789:AAE2e-test-token_abcdefghijklmnopqrst",
            webhook_url="https://desk.example.com/telegram/webhook",
            webhook_secret="s3cret",
        ),
        whatsapp=WhatsAppSettings(
            access_token="EAAG", phone_number_id="1", app_secret="a", verify_token="v"
        ),
        slack=SlackSettings(bot_token="xoxb-1", signing_secret="s"),
    )
    adapters = build_adapters(settings, FakeInbox())  # type: ignore[arg-type]
    assert [a.channel for a in adapters] == ["telegram", "whatsapp", "slack"]
    assert not any(a.started for a in adapters)
    app = web.Application()
    for adapter in adapters:
        adapter.install(app)
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    assert routes >= {
        ("POST", "/telegram/webhook"),
        ("GET", "/whatsapp/webhook"),
        ("POST", "/whatsapp/webhook"),
        ("POST", "/slack/events"),
    }
    for adapter in adapters:
        await adapter.stop()
