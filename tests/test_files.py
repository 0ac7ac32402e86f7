"""The platforms' size limits for relayed files (bot.domain.files): pure decisions, checked
first."""

from __future__ import annotations

import pytest

from adapters.slack import parse_event_callback
from bot.domain.events import AgentMessage
from bot.domain.files import MB, describe, inbound_plan, outbound_plan


@pytest.mark.parametrize(
    ("channel", "size", "refused"),
    [
        ("telegram", 20 * MB, False),  # getFile's limit is inclusive
        ("telegram", 20 * MB + 1, True),
        ("telegram", None, False),  # unknown: getFile says, and the thread is told
        ("whatsapp", 100 * MB, False),
        ("whatsapp", 2048 * MB, True),  # over Slack's 1 GB
    ],
)
def test_what_a_customer_sends_is_fetched_within_the_limits(
    channel: str, size: int | None, refused: bool
) -> None:
    plan = inbound_plan(channel, "document", size)
    assert (plan.refused is not None) == refused
    if channel == "telegram" and refused:
        assert plan.refused == "Telegram lets bots download files up to 20 MB"


@pytest.mark.parametrize(
    ("channel", "mime", "size", "kind"),
    [
        ("telegram", "image/png", 10 * MB, "photo"),
        ("telegram", "image/png", 10 * MB + 1, "document"),  # too big for sendPhoto
        ("telegram", "application/pdf", 50 * MB, "document"),
        ("telegram", "application/pdf", 50 * MB + 1, None),
        ("whatsapp", "image/jpeg", 5 * MB, "image"),
        ("whatsapp", "image/jpeg", 5 * MB + 1, "document"),
        ("whatsapp", "image/gif", 1000, "document"),  # WhatsApp images are JPEG and PNG
        ("whatsapp", "video/mp4", 30 * MB, "document"),
        ("whatsapp", "application/zip", 100 * MB + 1, None),
    ],
)
def test_an_agents_file_goes_as_the_platform_takes_it(
    channel: str, mime: str, size: int, kind: str | None
) -> None:
    plan = outbound_plan(channel, mime, size)
    if kind is None:
        assert plan.refused is not None and "MB" in plan.refused
    else:
        assert (plan.kind, plan.refused) == (kind, None)


def test_a_file_is_named_with_its_size() -> None:
    assert describe("document", "a.pdf", 25 * MB) == "a document (a.pdf, 25.0 MB)"
    assert describe("image", None, 2048) == "an image (2 KB)"
    assert describe("photo", None) == "a photo"


def test_a_file_share_event_carries_its_files() -> None:
    body = {
        "type": "event_callback",
        "event_id": "Ev1",
        "event": {
            "type": "message",
            "subtype": "file_share",
            "channel": "C1",
            "user": "U1",
            "text": "here",
            "ts": "2.000002",
            "thread_ts": "1.000001",
            "files": [
                {
                    "id": "F1",
                    "name": "guide.pdf",
                    "mimetype": "application/pdf",
                    "size": 1234,
                    "url_private": "https://files.slack.com/files-pri/T1-F1/guide.pdf",
                    "url_private_download": "https://files.slack.com/files-pri/T1-F1/download/guide.pdf",
                },
                {"name": "no id: skipped"},
            ],
        },
    }
    event = parse_event_callback(body)
    assert isinstance(event, AgentMessage)
    [f] = event.files
    assert (f.id, f.name, f.mimetype, f.size) == ("F1", "guide.pdf", "application/pdf", 1234)
    assert f.url_private.endswith("/download/guide.pdf")


def test_the_bot_token_goes_only_to_slacks_file_host() -> None:
    from adapters.slack import SlackAdapter
    from bot.base.settings import SlackSettings

    def allowed(api_base: str, url: str) -> bool:
        adapter = object.__new__(SlackAdapter)
        adapter._settings = SlackSettings(bot_token="xoxb-1", signing_secret="s", api_base=api_base)
        return adapter._slack_file_url(url)

    slack = "https://slack.com/api/"
    assert allowed(slack, "https://files.slack.com/files-pri/T1-F1/a.pdf")
    assert allowed("https://slack-gov.com/api/", "https://files.slack-gov.com/files-pri/T1-F1/a")
    assert allowed("http://127.0.0.1:5001/slack/api/", "http://127.0.0.1:5001/slack/files-pri/x")
    assert not allowed(slack, "https://evil.example/files-pri/T1-F1/a.pdf")
    assert not allowed(slack, "http://files.slack.com/files-pri/T1-F1/a.pdf")  # not https
    assert not allowed(slack, "https://files.slack.com.evil.example/a")
    assert not allowed("http://127.0.0.1:5001/slack/api/", "http://127.0.0.1:5002/x")
    assert not allowed(slack, "https://files.slack.com:99999/a")
