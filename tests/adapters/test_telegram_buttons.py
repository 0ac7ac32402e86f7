"""Taking buttons off a message: the adapter's ``edit_buttons`` with the real aiogram client,
against the Telegram stand-in, which answers editMessageReplyMarkup as the Bot API does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from adapters.telegram import TelegramAdapter, parse_update_json
from bot.base.settings import TelegramSettings
from bot.domain.events import CustomerButton
from bot.domain.outbound import BadRequest, Button, Outbound
from sandbox import StandIns

from .adapter_fakes import FakeInbox, payload

TOKEN = "123456789:AAE2e-test-token_abcdefghijklmnopqrst"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)


@pytest.fixture
async def standins() -> AsyncIterator[StandIns]:
    s = StandIns(
        desk_url="http://127.0.0.1:9",  # never called: the adapter polls nothing here
        telegram_token=TOKEN,
        whatsapp_access_token="EAAG-x",
        whatsapp_phone_number_id="1065",
        whatsapp_app_secret="app-secret",
        slack_bot_token="xoxb-x",
        slack_signing_secret="signing-secret",
        rate_limits=False,
    )
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
async def adapter(standins: StandIns) -> AsyncIterator[TelegramAdapter]:
    settings = TelegramSettings(bot_token=TOKEN, api_base=standins.telegram_api_base)
    made = TelegramAdapter(settings, FakeInbox(), max_body_bytes=65536, request_timeout=5)
    yield made
    await made.bot.session.close()


def prompt(chat: int) -> Outbound:
    return Outbound(
        channel="telegram",
        kind="text",
        destination=str(chat),
        text="How did we do?",
        buttons=tuple(Button(text=str(n), data=f"rate:1:9:{n}") for n in range(1, 6)),
    )


def remove(chat: int, message_id: str) -> Outbound:
    return Outbound(
        channel="telegram", kind="edit_buttons", destination=str(chat), reply_to=message_id
    )


async def test_edit_buttons_removes_the_keyboard_and_is_safe_to_repeat(
    standins: StandIns, adapter: TelegramAdapter
) -> None:
    tg = standins.telegram
    await tg.customer_says(42, "hi")
    sent = await adapter.send(prompt(42))
    assert sent.platform_message_id is not None
    assert tg.sent_to(42)[-1]["reply_markup"]["inline_keyboard"][0][4]["callback_data"] == (
        "rate:1:9:5"
    )
    done = await adapter.send(remove(42, sent.platform_message_id))
    assert done.platform_message_id == sent.platform_message_id
    message = tg.sent_to(42)[-1]
    assert "reply_markup" not in message and "edit_date" in message
    with pytest.raises(ValueError, match="has no button"):
        await tg.customer_presses(42, int(sent.platform_message_id), "rate:1:9:5")
    # Again (a retry after a crash, or a reopen after a rating): already so, not an error.
    await adapter.send(remove(42, sent.platform_message_id))
    assert "editmessagereplymarkup" in tg.calls


async def test_edit_buttons_on_a_missing_message_is_a_bad_request(
    standins: StandIns, adapter: TelegramAdapter
) -> None:
    await standins.telegram.customer_says(42, "hi")
    with pytest.raises(BadRequest, match="message to edit not found"):
        await adapter.send(remove(42, "999"))
    with pytest.raises(BadRequest, match="needs the message id"):
        await adapter.send(remove(42, ""))


async def test_the_stand_in_refuses_edits_as_the_bot_api_does(standins: StandIns) -> None:
    tg = standins.telegram
    api = TelegramAPIServer.from_base(standins.telegram_api_base)
    bot = Bot(TOKEN, session=AiohttpSession(api=api))
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="1", callback_data="rate:1:9:1")]]
    )
    try:
        customer_msg = await tg.customer_says(42, "hello")
        with pytest.raises(TelegramBadRequest, match="chat not found"):
            await bot.edit_message_reply_markup(chat_id=43, message_id=1)
        ours = await bot.send_message(42, "How did we do?", reply_markup=keyboard)
        with pytest.raises(TelegramBadRequest) as same:
            await bot.edit_message_reply_markup(
                chat_id=42, message_id=ours.message_id, reply_markup=keyboard
            )
        assert same.value.message == NOT_MODIFIED
        with pytest.raises(TelegramBadRequest) as theirs:
            await bot.edit_message_reply_markup(chat_id=42, message_id=customer_msg)
        assert theirs.value.message == "Bad Request: message can't be edited"
        with pytest.raises(TelegramBadRequest) as missing:
            await bot.edit_message_reply_markup(chat_id=42, message_id=12345)
        assert missing.value.message == "Bad Request: message to edit not found"
        edited = await bot.edit_message_reply_markup(chat_id=42, message_id=ours.message_id)
        assert not isinstance(edited, bool) and edited.reply_markup is None
        with pytest.raises(TelegramBadRequest) as again:
            await bot.edit_message_reply_markup(chat_id=42, message_id=ours.message_id)
        assert again.value.message == NOT_MODIFIED
        tg.block(42)
        with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
            await bot.edit_message_reply_markup(
                chat_id=42, message_id=ours.message_id, reply_markup=keyboard
            )
    finally:
        await bot.session.close()


def test_a_callback_names_the_message_its_button_is_on() -> None:
    ev = parse_update_json(payload("telegram", "callback_query"))
    assert isinstance(ev, CustomerButton) and ev.tapped_message_id == "9"
