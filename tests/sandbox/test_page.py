"""What the sandbox page shows, in headless Chromium (skipped without /usr/bin/chromium)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandbox import StandIns

from .test_control import quiet_desk  # noqa: F401  (a fixture)

CHROMIUM = os.environ.get("DESK_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Chromium")


@pytest.fixture
async def standins(quiet_desk: str) -> AsyncIterator[StandIns]:  # noqa: F811
    s = StandIns.for_sandbox(quiet_desk, rate_limits=False)
    await s.start()
    yield s
    await s.stop()


async def _page_text(standins: StandIns, selector: str) -> list[str]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(standins.url + "/")
            await page.wait_for_selector("#online:text('sandbox running')")
            await page.wait_for_timeout(300)
            return [t.strip() for t in await page.locator(selector).all_inner_texts()]
        finally:
            await browser.close()


async def test_whatsapp_chats_are_listed_newest_first(standins: StandIns) -> None:
    """Ann wrote first, Bo after her. Ann's wamid's random part happens to start with digits,
    which the page used to read as part of the counter, listing her as the newest."""
    now = time.time()
    wa = standins.whatsapp
    wa.names.update({"15551230001": "Ann", "15551230002": "Bo"})
    wa.received += [
        {"from": "15551230001", "id": "wamid.SANDBOX0000000199999999", "timestamp": str(int(now))}
        | {"type": "text", "text": {"body": "first"}},
        {"from": "15551230002", "id": "wamid.SANDBOX00000002ABCDEF01", "timestamp": str(int(now))}
        | {"type": "text", "text": {"body": "second"}},
    ]
    names = await _page_text(standins, "#wa-convs .conv:not(.active) b")
    assert names[:2] == ["Bo", "Ann"]


async def test_a_dm_tab_names_its_person_and_the_fast_forward_is_shown(
    standins: StandIns,
) -> None:
    standins.slack.channels.setdefault("D0BOB", [])
    standins.clock_steps = [(time.time() - 60, 15 * 60.0)]  # as restored from the state file
    tabs = await _page_text(standins, "#tabs button")
    assert any(t.startswith("Bob (DM)") for t in tabs), tabs
    assert not any("D0BOB" in t for t in tabs), tabs
    assert await _page_text(standins, "#ff-offset") == ["(+15 min ahead)"]


def _card(ts: str, **view: object) -> dict[str, object]:
    """A bot message carrying a real card, as the desk draws it."""
    from bot.workspace.cards import CardView, card_blocks, card_text

    fields: dict[str, object] = {
        "ticket_id": 7,
        "customer_name": "Peter Parker-Montgomery",
        "channel": "telegram",
        "status": "open",
        "priority": "high",
        "reasons": ("negative sentiment 0.93", "intent payment_issue"),
        "first_message": "I was charged twice for order 1187 and nobody answers",
        "assignee_id": "U0BOB",
        "assignee_name": "Bob",
        "team": "support",
        "transfer_to": ("billing", "tech"),
        "tag_choices": ("refund", "vip", "bug", "shipping"),
        "intent_choices": ("billing", "payment_issue", "refund_request", "shipping"),
        "kb": True,
        "reply_label": "Reply with a macro",
        "revision": "a1",
    } | view
    v = CardView(**fields)  # type: ignore[arg-type]
    return {
        "type": "message",
        "subtype": "bot_message",
        "bot_id": "B0DESKBOT",
        "user": "U0DESKBOT",
        "text": card_text(v),
        "blocks": card_blocks(v),
        "ts": ts,
    }


@pytest.mark.parametrize("width", [1280, 1440])
async def test_a_cards_menus_fit_at_common_laptop_widths(standins: StandIns, width: int) -> None:
    """At 1280–1440 px the menu row used to overflow: Tags shrank to a sliver, "Correct intent"
    was cut and a horizontal scrollbar appeared."""
    from playwright.async_api import async_playwright

    standins.slack.channels.setdefault("C0SUPPORT", []).append(_card(f"{time.time():.6f}"))
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": width, "height": 900})
            await page.goto(standins.url + "/")
            await page.wait_for_selector("article.card select")
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{overflow}px of horizontal scrolling at {width}px"
            widths = await page.eval_on_selector_all(
                "article.card select", "els => els.map(e => e.getBoundingClientRect().width)"
            )
            assert widths and min(widths) >= 80, widths
            clipped = await page.eval_on_selector_all(
                "article.card .actions, article.card form, article.card",
                "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).length",
            )
            assert clipped == 0
        finally:
            await browser.close()


async def test_a_moved_card_is_not_a_live_ticket_and_composer_threads_say_so(
    standins: StandIns,
) -> None:
    now = time.time()
    moved = _card(f"{now:.6f}", moved="➡️ Transferred to team *billing* (<#C0BILLING>) by <@U0BOB>.")
    composer = _card(f"{now + 1:.6f}", ticket_id=8, reply_label="Reply to customer")
    standins.slack.channels.setdefault("C0SUPPORT", []).extend([moved, composer])
    chips = await _page_text(standins, "article.card .chips")
    assert any("Moved on" in c for c in chips), chips
    assert sum("Claimed" in c for c in chips) == 1  # the composer-mode card only
    hints = await _placeholders(standins)
    assert "This card moved on: write in its new card's thread" in hints
    assert "Note to the team: nothing written here reaches the customer" in hints


async def _placeholders(standins: StandIns) -> list[str]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(standins.url + "/")
            await page.wait_for_selector("article.card")
            return list(
                await page.eval_on_selector_all(
                    ".replyform input[type=text]", "els => els.map(e => e.placeholder)"
                )
            )
        finally:
            await browser.close()


async def test_the_customers_chat_shows_contacts_and_files_as_their_app_would(
    standins: StandIns,
) -> None:
    """A shared contact showed as "[message]", the agent's PDF as "[📄 receipt.pdf]" with no
    link, a photo as "[photo]"."""
    import aiohttp
    from playwright.async_api import async_playwright

    tg, now = standins.telegram, int(time.time())
    chat = {"id": 42, "type": "private", "first_name": "Ann"}
    tg._known_chats[42] = chat
    ann = {"id": 42, "is_bot": False, "first_name": "Ann", "language_code": "en"}
    desk = {"id": 987654321, "is_bot": True, "first_name": "Acme"}
    tg.received.append(
        {"message_id": 1, "from": ann, "chat": chat, "date": now}
        | {"contact": {"phone_number": "+15551234567", "first_name": "Ann", "last_name": "Lee"}}
    )
    tg._store_file("F1", "documents/receipt.pdf", b"%PDF-1.4 receipt", 16)
    tg.sent.append(
        {"message_id": 2, "from": desk, "chat": chat, "date": now}
        | {"document": {"file_id": "F1", "file_unique_id": "UF1", "file_name": "receipt.pdf"}}
    )
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(standins.url + "/")
            await page.wait_for_selector("#tg-log .bubble")
            texts = [t.strip() for t in await page.locator("#tg-log .bubble").all_inner_texts()]
            links = await page.eval_on_selector_all(
                "#tg-log .bubble a", "els => els.map(e => e.getAttribute('href'))"
            )
        finally:
            await browser.close()
    assert any("📇 Ann Lee · +15551234567" in t for t in texts), texts
    assert not any("[message]" in t or "[📄" in t for t in texts), texts
    assert links == ["/control/telegram/files/F1"]
    async with aiohttp.ClientSession() as http, http.get(standins.url + links[0]) as resp:
        assert resp.status == 200 and await resp.read() == b"%PDF-1.4 receipt"
