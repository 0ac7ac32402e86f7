"""The Slack stand-in's file upload flow, driven by slack_sdk's files_upload_v2 as in Slack:
files.getUploadURLExternal, the bytes POSTed to the upload URL, files.completeUploadExternal."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox import StandIns

from .test_standins import FakeDesk


@pytest.fixture
async def standins() -> AsyncIterator[StandIns]:
    desk = FakeDesk()
    await desk.start()
    s = StandIns(
        desk_url=desk.url,
        telegram_token="123456:right-token",
        whatsapp_access_token="EAAG-right",
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


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


async def test_files_upload_v2_posts_the_file_in_the_channel_and_keeps_the_bytes(
    standins: StandIns,
) -> None:
    client = AsyncWebClient(token="xoxb-right", base_url=standins.slack_api_base)
    done = await client.files_upload_v2(
        channel="C0SUPPORT",
        content=PNG,
        filename="created.png",
        title="Tickets created",
        initial_comment="Desk figures 7d",
    )
    file_id = done["files"][0]["id"]
    slack = standins.slack
    assert slack.files[file_id]["content"] == PNG
    assert slack.files[file_id]["title"] == "Tickets created"
    posted = slack.messages("C0SUPPORT")[-1]
    assert posted["text"] == "Desk figures 7d"
    assert posted["files"] == [{"id": file_id, "title": "Tickets created", "name": "created.png"}]


async def test_upload_mistakes_are_refused_like_slack(standins: StandIns) -> None:
    client = AsyncWebClient(token="xoxb-right", base_url=standins.slack_api_base)
    with pytest.raises(SlackApiError) as caught:
        await client.files_getUploadURLExternal(filename="", length=10)
    assert caught.value.response["error"] == "invalid_arguments"
    with pytest.raises(SlackApiError) as caught:
        await client.files_getUploadURLExternal(filename="x.png", length=2 * 1024**3)
    assert caught.value.response["error"] == "file_upload_size_restricted"

    url = await client.files_getUploadURLExternal(filename="x.png", length=4)
    with pytest.raises(SlackApiError) as caught:  # completed before the bytes arrived
        await client.files_completeUploadExternal(files=[{"id": url["file_id"]}])
    assert caught.value.response["error"] == "file_not_found"
    async with aiohttp.ClientSession() as http, http.post(url["upload_url"], data=b"abcd") as r:
        assert r.status == 200 and await r.text() == "OK - 4"
    with pytest.raises(SlackApiError) as caught:
        await client.files_completeUploadExternal(
            files=[{"id": url["file_id"]}], channel_id="C0NOWHERE"
        )
    assert caught.value.response["error"] == "invalid_channel"
    with pytest.raises(SlackApiError) as caught:
        await client.api_call(
            "files.completeUploadExternal", params={"files": json.dumps([{"id": "F0NONE"}])}
        )
    assert caught.value.response["error"] == "file_not_found"
