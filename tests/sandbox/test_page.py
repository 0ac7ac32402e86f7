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
