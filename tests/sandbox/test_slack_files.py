"""The uploaded files in the sandbox: conversations.open for a DM, the control API that lists
and serves what the desk uploaded (the page shows images from it), and a restart keeping them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox import StandIns
from sandbox.slack import SlackStandIn

from .test_standins import FakeDesk

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
CSV = b"ticket,priority\r\n1,high\r\n"


@pytest.fixture
async def standins() -> AsyncIterator[StandIns]:
    desk = FakeDesk()
    await desk.start()
    s = StandIns.for_sandbox(desk.url, rate_limits=False)
    await s.start()
    yield s
    await s.stop()
    await desk.stop()


def client(s: StandIns) -> AsyncWebClient:
    return AsyncWebClient(token=s.slack.bot_token, base_url=s.slack_api_base)


async def test_conversations_open_gives_the_apps_dm_with_a_user(standins: StandIns) -> None:
    web = client(standins)
    opened = await web.conversations_open(users="U0CAROL")
    assert opened["channel"]["id"] == "D0CAROL" == standins.slack.dm_channel("U0CAROL")
    done = await web.files_upload_v2(channel="D0CAROL", content=CSV, filename="tickets.csv")
    assert standins.slack.messages("D0CAROL")[-1]["files"][0]["id"] == done["files"][0]["id"]
    for users, error in (("", "users_list_not_supplied"), ("U0NOBODY", "user_not_found")):
        with pytest.raises(SlackApiError) as caught:
            await web.conversations_open(users=users)
        assert caught.value.response["error"] == error


async def test_the_control_api_lists_and_serves_the_uploaded_files(standins: StandIns) -> None:
    done = await client(standins).files_upload_v2(
        channel="C0SUPPORT", content=PNG, filename="created.png", title="Tickets created"
    )
    file_id = done["files"][0]["id"]
    async with aiohttp.ClientSession() as http:
        async with http.get(standins.url + "/control/slack/files") as r:
            assert r.status == 200
            listed = await r.json()
        assert listed == [
            {
                "id": file_id,
                "name": "created.png",
                "title": "Tickets created",
                "size": len(PNG),
                "mimetype": "image/png",
                "channels": ["C0SUPPORT"],
                "url": f"/control/slack/files/{file_id}",
            }
        ]
        async with http.get(standins.url + listed[0]["url"]) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "image/png"
            assert await r.read() == PNG
        async with http.get(standins.url + "/control/slack/files/F0NONE") as r:
            assert r.status == 404
            assert "no uploaded file F0NONE" in await r.text()
        # What the page draws from: the message in the channel names the file it shows.
        async with http.get(standins.url + "/control/state") as r:
            state = await r.json()
    shown = [m for m in state["slack"]["C0SUPPORT"] if m.get("files")]
    assert shown[-1]["files"] == [
        {"id": file_id, "title": "Tickets created", "name": "created.png"}
    ]


async def test_a_restarted_slack_keeps_the_uploaded_files(standins: StandIns) -> None:
    done = await client(standins).files_upload_v2(
        channel="C0SUPPORT", content=PNG, filename="created.png"
    )
    file_id = done["files"][0]["id"]
    saved = json.loads(json.dumps(standins.slack.snapshot()))
    again = SlackStandIn(bot_token="xoxb-x", signing_secret="s", desk_url="http://127.0.0.1:1")
    again.restore(saved)
    assert again.files[file_id]["content"] == PNG
    assert again.files[file_id]["channels"] == ["C0SUPPORT"]
