"""The stand-ins' file endpoints answer like the platforms, driven by the real clients: Telegram's
getFile and file endpoint, sendPhoto/sendDocument limits; WhatsApp's media info, download URL
(bearer token) and media upload limits; Slack's files.info and files.delete."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest, TelegramEntityTooLarge
from aiogram.types import BufferedInputFile
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox import StandIns

from .test_standins import FakeDesk

TOKEN = "123456:right-token"
WA = "EAAG-right"
MB = 1024 * 1024


@pytest.fixture
async def standins() -> AsyncIterator[StandIns]:
    desk = FakeDesk()
    await desk.start()
    s = StandIns(
        desk_url=desk.url,
        telegram_token=TOKEN,
        whatsapp_access_token=WA,
        whatsapp_phone_number_id="1065",
        whatsapp_app_secret="app-secret",
        slack_bot_token="xoxb-right",
        slack_signing_secret="signing-secret",
        retry_base_delay=0.05,
    )
    await s.start()
    yield s
    await s.stop()
    await desk.stop()


@pytest.fixture
async def bot(standins: StandIns) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(standins.telegram_api_base))
    b = Bot(TOKEN, session=session)
    yield b
    await b.session.close()


async def test_telegram_get_file_downloads_and_refuses_over_20_mb(
    standins: StandIns, bot: Bot
) -> None:
    tg = standins.telegram
    await tg.customer_sends_document(5, "a.pdf", b"%PDF small", mime_type="application/pdf")
    await tg.customer_sends_document(5, "b.mp4", b"x", mime_type="video/mp4", size=21 * MB)
    small, big = (u["message"]["document"]["file_id"] for u in tg.updates[-2:])
    found = await bot.get_file(small)
    assert found.file_size == 10 and found.file_path
    buffer = io.BytesIO()
    await bot.download_file(found.file_path, destination=buffer)
    assert buffer.getvalue() == b"%PDF small"
    with pytest.raises(TelegramBadRequest, match="Bad Request: file is too big"):
        await bot.get_file(big)
    with pytest.raises(TelegramBadRequest, match="Bad Request: invalid file_id"):
        await bot.get_file("nope")
    async with aiohttp.ClientSession() as http:  # the file endpoint checks the token too
        url = f"{standins.telegram_api_base}/file/bot123456:wrong/{found.file_path}"
        async with http.get(url) as resp:
            assert resp.status == 401


async def test_telegram_send_photo_and_document_limits(standins: StandIns, bot: Bot) -> None:
    await standins.telegram.customer_says(5, "hi")
    photo = BufferedInputFile(b"\xff\xd8" + b"p" * 100, filename="p.jpg")
    sent = await bot.send_photo(5, photo, caption="look")
    assert sent.photo and sent.caption == "look"
    assert standins.telegram.file_content(sent.photo[-1].file_id) == b"\xff\xd8" + b"p" * 100
    big_photo = BufferedInputFile(b"p" * (10 * MB + 1), filename="big.jpg")
    with pytest.raises(TelegramBadRequest, match="PHOTO_SAVE_FILE_INVALID"):
        await bot.send_photo(5, big_photo)
    doc = await bot.send_document(5, BufferedInputFile(b"p" * (10 * MB + 1), filename="big.jpg"))
    assert doc.document is not None and doc.document.file_name == "big.jpg"
    with pytest.raises(TelegramEntityTooLarge):
        await bot.send_document(5, BufferedInputFile(b"d" * (50 * MB + 1), filename="huge.bin"))


async def test_whatsapp_media_needs_the_token_and_keeps_the_type_limits(
    standins: StandIns,
) -> None:
    wa = standins.whatsapp
    media_id = wa.store_media(b"%PDF doc", "application/pdf", "doc.pdf")
    base = standins.whatsapp_api_base
    auth = {"Authorization": f"Bearer {WA}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/{media_id}") as resp:
            assert resp.status == 401 and (await resp.json())["error"]["code"] == 190
        async with http.get(f"{base}/{media_id}", headers=auth) as resp:
            info = await resp.json()
        assert info["file_size"] == 8 and info["mime_type"] == "application/pdf"
        async with http.get(info["url"]) as resp:  # the URL alone is not enough
            assert resp.status == 401
        async with http.get(info["url"], headers=auth) as resp:
            assert await resp.read() == b"%PDF doc"

        async def upload(content: bytes, mime: str) -> tuple[int, dict[str, object]]:
            form = aiohttp.FormData()
            form.add_field("messaging_product", "whatsapp")
            form.add_field("type", mime)
            form.add_field("file", content, filename="f", content_type=mime)
            async with http.post(f"{base}/1065/media", data=form, headers=auth) as resp:
                return resp.status, await resp.json()

        status, ok = await upload(b"\x89PNG small", "image/png")
        assert status == 200 and wa.media[str(ok["id"])]["content"] == b"\x89PNG small"
        status, refused = await upload(b"i" * (5 * MB + 1), "image/png")
        error = refused["error"]
        assert status == 400 and isinstance(error, dict) and error["code"] == 131053


async def test_slack_files_info_and_delete(standins: StandIns) -> None:
    client = AsyncWebClient(token="xoxb-right", base_url=standins.slack_api_base)
    card = await client.chat_postMessage(channel="C0SUPPORT", text="card")
    done = await client.files_upload_v2(
        channel="C0SUPPORT",
        thread_ts=card["ts"],
        content=b"x",
        filename="x.png",
        initial_comment="caption",
    )
    file_id = done["files"][0]["id"]
    info = await client.files_info(file=file_id)
    [share] = info["file"]["shares"]["public"]["C0SUPPORT"]
    assert share["thread_ts"] == card["ts"]
    await client.files_delete(file=file_id)
    with pytest.raises(SlackApiError) as gone:
        await client.files_delete(file=file_id)
    assert gone.value.response["error"] == "file_deleted"
