"""Use the sandbox page in headless Chromium the way a person does, and check what it shows.

    .venv/bin/python -m sandbox.browser_check [--out FILE.png] [--skip-restart]
    make browser-check                        # the picture goes to bench-results/sandbox.png
    make browser-check OUT=docs/sandbox.png   # refresh the README's picture (a tracked file)

It starts ``deskbot sandbox`` (the rules model, free ports, a fresh temporary folder with a copy of
rules.yaml), opens the page and, using only the page's own controls (typing, clicking):

1. writes as a new Telegram customer with Chinese set and sees the Chinese acknowledgement;
2. writes as a new WhatsApp customer and sees the acknowledgement; presses "My tickets" under it
   and sees their ticket, then asks for ``#1`` (not theirs) and is told there is none;
3. finds both cards in the channel tabs, the urgent one on top, rendered like Slack (the app,
   "Why:" on its own line, the customer's ``& <b>`` shown literally, mentions by name);
4. claims the Telegram card, half-types a reply, reloads the page (the draft is still there),
   sends it, and sees the customer get it and the ✅ reaction on the reply;
5. resolves the card, rates it 5 as the customer, sees the thanks and the rating on the card;
6. runs ``/desk`` and sees the answer rendered (bold, not ``*asterisks*``); sorts and filters;
7. writes as an email customer (From, Subject, text), sees the acknowledgement with its
   In-Reply-To and ``[#N]``, answers as Alice in the card's thread, sees that mail arrive with
   the same token, and replies to it from the page (↩ Reply), which joins the same card; then
   checks the page's mrkdwn and rich_text renderers on a few tricky texts;
8. stops the sandbox with SIGINT, starts it again in the same folder, writes as the same
   customer and as a brand-new one, and sees the answers and the new card arrive.

Each step prints one line; a failing step prints what the page showed and the sandbox's log,
and the script exits 1. At the end it saves a full-page screenshot (``--out``).

Needs Chromium (Debian: ``apt-get install chromium``) and the ``playwright`` package (the ``dev``
extra). Playwright drives the system Chromium through ``executable_path``, so no browser
download (``playwright install``) is needed. Without CJK and emoji fonts the screenshot shows
boxes for Chinese and emoji (the checks still pass): ``apt-get install fonts-noto-cjk
fonts-noto-color-emoji``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Locator, Page, Response, expect, sync_playwright

from sandbox.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("DESK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT = 20_000  # ms: the desk answers in well under a second; this is for a loaded machine

TG_NAME = "Wei"
TG_TEXT = "我的包裹还没到 & <b>订单</b> A-1001"
WA_NAME = "Sheena"
WA_TEXT = "Our system down since this morning, nobody can log in"
REPLY = "Sorry Wei, 包裹今天发出"
EM_NAME = "Anna"
EM_FROM = "anna.browser@customer.test"
EM_SUBJECT = "Parcel 88 is missing"
EM_TEXT = "My parcel 88 never came. Can you check?"
EM_REPLY = "Found it: parcel 88 goes out again today."
EM_THANKS = "Great, thank you!"
LATE_REPLY = "Your account is unlocked again, sorry for the wait"


class CheckFailed(Exception):
    pass


class Sandbox:
    """``deskbot sandbox`` in a folder of its own, started and stopped like a person would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.desk_port = free_port()
        self.standin_port = free_port()
        self.url = f"http://127.0.0.1:{self.standin_port}/"
        self.log = folder / "sandbox.log"
        self.proc: subprocess.Popen[bytes] | None = None
        shutil.copy(ROOT / "rules.yaml", folder / "rules.yaml")
        shutil.copytree(ROOT / "kb", folder / "kb")  # the articles, beside rules.yaml

    def command(self) -> list[str]:
        deskbot = Path(sys.executable).with_name("deskbot")
        args = ["sandbox", "--port", str(self.desk_port), "--standin-port", str(self.standin_port)]
        if deskbot.exists():
            return [str(deskbot), *args]
        run = "import sys; from bot.cli import main; sys.exit(main())"
        return [sys.executable, "-c", run, *args]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DESK_DATABASE_URL"}
        env.update(
            DESK_MODEL="rules",
            DESK_RULES=str(self.folder / "rules.yaml"),
            HF_HUB_OFFLINE="1",
            # This checkout's code, whichever checkout the virtualenv was installed from.
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our own Ctrl-C is not theirs; we stop it ourselves
            )
        deadline = time.monotonic() + 60
        desk = f"http://127.0.0.1:{self.desk_port}/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CheckFailed(f"deskbot sandbox exited with {self.proc.returncode}")
            if _answers(self.url + "control/state") and _answers(desk):
                return
            time.sleep(0.2)
        raise CheckFailed("deskbot sandbox did not come up within 60 s")

    def interrupt(self) -> int:
        """Ctrl-C, as a person stops it; returns its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise CheckFailed("deskbot sandbox did not stop within 30 s of Ctrl-C") from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


class Check:
    def __init__(self, page: Page, sandbox: Sandbox) -> None:
        self.page = page
        self.sandbox = sandbox
        self.failed_requests: list[str] = []
        self.page_errors: list[str] = []
        page.on("response", self._response)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.failed_requests.append(f"{response.status} {response.url}")

    def step(self, what: str, action: Callable[[], str | None]) -> None:
        try:
            detail = action()
        except Exception as exc:
            # Playwright's message ends with a long call log; what was expected and seen is first.
            lines = str(exc).strip().split("Call log:")[0].strip().splitlines() or [repr(exc)]
            print(f"FAIL {what}: " + "\n     ".join(line.strip() for line in lines[:4]))
            print(self.saw())
            raise CheckFailed(what) from exc
        print(f"ok   {what}{f' ({detail})' if detail else ''}", flush=True)

    def saw(self) -> str:
        parts = []
        for name, sel in (
            ("Telegram", "#tg-log"),
            ("WhatsApp", "#wa-log"),
            ("Email", "#em-log"),
            ("Slack", "#cards"),
            ("/desk", "#desk-answer"),
            ("errors", ".err.on"),
        ):
            try:
                texts = self.page.locator(sel).all_inner_texts()
            except Exception as exc:
                texts = [f"(could not read: {exc})"]
            text = "\n".join(texts).strip()
            parts.append(f"--- the page's {name}:\n{text[-1500:] if text else '(empty)'}")
        parts.append(f"--- the sandbox's log (last lines):\n{self.sandbox.tail()}")
        return "\n".join(parts)

    # -- what a person looks at ------------------------------------------------------------------

    def card(self, has_text: str) -> Locator:
        return self.page.locator("#cards article.card", has_text=has_text)

    def find_card(self, name: str) -> str:
        """Look through the channel tabs until one shows a card naming ``name``; stay there."""
        deadline = time.monotonic() + WAIT / 1000
        while True:
            for tab in self.page.locator("#tabs [role=tab]").all():
                tab.click()
                if self.card(name).count():
                    return str(tab.get_attribute("data-channel"))
            if time.monotonic() > deadline:
                raise AssertionError(f"no card for {name} in any channel")
            self.page.wait_for_timeout(500)

    def tg_says(self, text: str) -> None:
        self.page.locator("#tg-text").press_sequentially(text)
        self.page.locator("#tg-text").press("Enter")

    def wa_says(self, text: str) -> None:
        self.page.locator("#wa-text").press_sequentially(text)
        self.page.locator("#wa-text").press("Enter")


def run(out: Path, skip_restart: bool) -> None:
    folder = Path(tempfile.mkdtemp(prefix="deskbot-browser-check-"))
    sandbox = Sandbox(folder)
    try:
        sandbox.start()
        print(f"ok   deskbot sandbox is up ({sandbox.url}, folder {folder})", flush=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(WAIT)
                expect.set_options(timeout=WAIT)
                check = Check(page, sandbox)
                try:
                    steps(check, sandbox, skip_restart)
                except CheckFailed:
                    failed = Path(tempfile.gettempdir()) / "deskbot-browser-check-failed.png"
                    page.screenshot(path=str(failed), full_page=True)
                    print(f"     the page as it was: {failed}")
                    raise
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
                print(f"ok   saved a screenshot of the page to {out}")
            finally:
                browser.close()
    finally:
        sandbox.stop()
        shutil.rmtree(folder, ignore_errors=True)


def steps(check: Check, sandbox: Sandbox, skip_restart: bool) -> None:
    page = check.page

    def opens() -> str:
        page.goto(sandbox.url)
        expect(page.locator("#online")).to_have_text("sandbox running")
        tabs = page.locator("#tabs [role=tab]")
        expect(tabs).to_have_count(5)  # the four teams' channels and the agent's App Home
        names = [t.split()[0] for t in tabs.all_inner_texts()]
        assert names == ["#support", "#vip", "#billing", "#support-zh", "🏠"], names
        return ", ".join(names)

    check.step("the page opens and shows every Slack channel", opens)

    def telegram_chinese() -> str:
        page.get_by_role("button", name="+ New customer").first.click()
        page.locator("#tg-name").fill(TG_NAME)
        page.locator("#tg-lang").select_option("zh-hans")
        check.tg_says(TG_TEXT)
        log = page.locator("#tg-log")
        expect(log.locator(".bubble.me")).to_contain_text(TG_TEXT)
        expect(log.locator(".bubble.me .lang")).to_have_text("zh-hans")
        ack = log.locator(".bubble.them").last
        expect(ack).to_contain_text("我们已收到您的消息")
        expect(page.locator("#tg-convs .conv.active")).to_contain_text(TG_NAME)
        return ack.locator(".text").inner_text()

    check.step("a Telegram customer writes in Chinese and gets the Chinese ack", telegram_chinese)

    def whatsapp() -> str:
        page.locator("#wa-new").click()
        page.locator("#wa-name").fill(WA_NAME)
        check.wa_says(WA_TEXT)
        log = page.locator("#wa-log")
        expect(log.locator(".bubble.me")).to_contain_text(WA_TEXT)
        ack = log.locator(".bubble.them").last
        expect(ack).to_contain_text("Thanks, we got your message")
        expect(ack.locator("time")).to_have_count(1)
        return ack.locator(".text").inner_text()

    check.step("a WhatsApp customer writes and gets the ack", whatsapp)

    def whatsapp_status() -> str:
        log = page.locator("#wa-log")
        log.get_by_role("button", name="My tickets").last.click()
        # Found by their text: WhatsApp's timestamps are whole seconds, so two answers within
        # one second may be listed in either order.
        listed = log.locator(".bubble.them", has_text="Your tickets:")
        expect(listed).to_contain_text("#2: ")
        check.wa_says("#1")  # the Telegram customer's ticket: answered like a missing one
        expect(
            log.locator(".bubble.them", has_text="We found no ticket #1 of yours")
        ).to_have_count(1)
        return listed.locator(".text").inner_text()

    check.step("the WhatsApp customer presses My tickets and looks up a number", whatsapp_status)

    def cards() -> str:
        # Wherever the rules route them: look through the channel tabs as a person would.
        wa_channel = check.find_card(WA_NAME)
        first = page.locator("#cards article.card").first
        expect(first).to_contain_text(WA_NAME)  # the urgent one is on top
        expect(first).to_have_attribute("data-priority", "urgent")
        tg_channel = check.find_card(TG_NAME)
        tg = check.card(TG_NAME)
        expect(tg.locator(".smsg .meta").first).to_contain_text("deskbot")
        expect(tg.locator(".smsg .meta .app").first).to_have_text("APP")
        text = tg.inner_text()
        assert "U0DESKBOT" not in text, "the bot is shown by its user id"
        assert TG_TEXT in text, f"the customer's text is not shown literally once: {text!r}"
        for entity in ("&amp;", "&lt;", "&gt;"):
            assert entity not in text, f"{entity} shown: escaped twice"
        assert tg.locator("b", has_text="订单").count() == 0, "the customer's <b> became HTML"
        why = tg.locator(".blk.context > div", has_text="Why:")
        expect(why).to_have_count(1)
        assert why.inner_text().startswith("Why:"), why.inner_text()
        expect(tg.locator(".chip.s-new")).to_have_text("New, unclaimed")
        expect(page.locator(f"#tabs [data-channel={tg_channel}] .newcount")).to_contain_text("new")
        return f"{WA_NAME} in {wa_channel}, urgent, on top; {TG_NAME} in {tg_channel}"

    check.step("both cards arrive, the urgent one on top, rendered like Slack", cards)

    def claims() -> str:
        # The Chinese customer's ticket is team zh's: Alice (team support) may not claim it
        # (teams' `claim: team`), and is told so privately; Carol, zh's agent, claims it.
        page.locator("#agent").select_option(label="Alice")
        card = check.card(TG_NAME)
        card.get_by_role("button", name="Claim").click()
        refused = page.get_by_text("can claim ticket")
        expect(refused.first).to_be_visible()
        told = refused.first.inner_text()
        expect(card).not_to_contain_text("Claimed by")
        page.locator("#agent").select_option(label="Carol")
        card.get_by_role("button", name="Claim").click()
        expect(card.locator(".chip.s-open")).to_have_text("Claimed")
        expect(card).to_contain_text("Claimed by Carol")
        expect(card.locator(".thread")).to_contain_text("Carol claimed this ticket")
        assert "<@U0CAROL>" not in card.inner_text() and "U0CAROL" not in card.inner_text()
        return f"Alice was told: {told!r}; " + card.locator(".blk.context").last.inner_text()

    check.step("Alice may not claim team zh's card; Carol claims it", claims)

    def history() -> str:
        card = check.card(TG_NAME)
        card.get_by_role("button", name="History").click()
        modal = page.locator("#modal")
        expect(modal).to_be_visible()
        expect(modal).to_contain_text(TG_NAME)
        page.locator("#modal-text").fill("Prefers Chinese; parcels to the office")
        page.locator("#modal-submit").click()
        expect(modal).to_be_hidden()
        expect(card.locator(".thread")).to_contain_text("updated the note about this customer")
        return "the customer's story in a modal; the note saved"

    check.step("Carol opens the customer's History and writes a note", history)

    def home() -> str:
        channel = page.locator("#tabs [role=tab][aria-selected=true]").get_attribute("data-channel")
        page.locator("#tabs [role=tab][data-channel=home]").click()
        mine = page.locator("#cards .card.home")
        expect(mine).to_contain_text(TG_NAME)  # her open ticket, claimed a moment ago
        shown = mine.inner_text().splitlines()[0]
        page.locator(f"#tabs [role=tab][data-channel={channel}]").click()
        expect(check.card(TG_NAME)).to_have_count(1)
        return shown

    check.step("Carol's App Home lists the ticket she took", home)

    def drafts() -> str:
        box = check.card(TG_NAME).locator("form.replyform input[type=text]")
        box.press_sequentially(REPLY[:12])
        page.wait_for_timeout(2500)  # a few refreshes of the page while she types
        expect(box).to_have_value(REPLY[:12])
        page.reload()
        expect(page.locator("#online")).to_have_text("sandbox running")
        box = check.card(TG_NAME).locator("form.replyform input[type=text]")
        expect(box).to_have_value(REPLY[:12])
        return "kept through refreshes and a reload"

    check.step("a half-typed reply survives refreshes and a reload", drafts)

    def replies() -> str:
        card = check.card(TG_NAME)
        box = card.locator("form.replyform input[type=text]")
        box.press("End")
        box.press_sequentially(REPLY[12:])
        box.press("Enter")
        expect(page.locator("#tg-log .bubble.them").last).to_contain_text(REPLY)
        reply = card.locator(".thread .smsg", has_text=REPLY)
        expect(reply.locator(".meta .name")).to_have_text("Carol")
        expect(reply.locator(".reaction")).to_contain_text("✅")
        assert ":white_check_mark:" not in card.inner_text()
        return "the customer got it; ✅ on the reply"

    check.step("Carol replies in the card's thread", replies)

    def resolves() -> str:
        card = check.card(TG_NAME)
        card.get_by_role("button", name="Resolve").click()
        expect(card.locator(".chip.s-resolved")).to_have_text("Resolved")
        resolved = page.locator("#tg-log .bubble.them", has_text="已解决").last
        expect(resolved).to_be_visible()
        resolved.get_by_role("button", name="5", exact=True).click()
        expect(page.locator("#tg-log .bubble.them").last).to_contain_text("感谢您的评价：5/5")
        expect(card).to_contain_text("rated 5/5")
        expect(card.locator(".thread")).to_contain_text("⭐ The customer rated this ticket 5/5")
        return "rated 5/5"

    check.step("Carol resolves it and the customer rates it", resolves)

    def desk_status() -> str:
        page.locator("#desk-text").fill("")
        page.locator("#desk-run").click()
        answer = page.locator("#desk-answer")
        expect(answer.locator("b", has_text="Desk status")).to_be_visible()
        assert "*Desk status*" not in answer.inner_text()
        return answer.locator(".answer").inner_text().splitlines()[0]

    check.step("/desk answers, rendered as mrkdwn", desk_status)

    def deflects() -> str:
        page.get_by_role("button", name="+ New customer").first.click()
        page.locator("#tg-name").fill("Kim")
        page.locator("#tg-lang").select_option("en")
        check.tg_says("How do I reset my password? I forgot it")
        log = page.locator("#tg-log")
        answer = log.locator(".bubble.them", has_text="This may answer your question").last
        expect(answer).to_contain_text("Reset your password")
        answer.get_by_role("button", name="That solved it").click()
        expect(log.locator(".bubble.them").last).to_contain_text("Glad it helped")
        page.wait_for_timeout(1500)  # a card, if one were made, would show by now
        expect(page.locator("#cards article.card", has_text="Kim")).to_have_count(0)
        page.locator("#tg-convs .conv", has_text=TG_NAME).click()  # back to the first customer
        expect(page.locator("#tg-convs .conv.active")).to_contain_text(TG_NAME)
        return "answered from the knowledge base: no ticket, no card"

    check.step("a customer's question is answered from the knowledge base", deflects)

    def sorts_and_filters() -> str:
        shown = page.locator("#cards article.card")
        here = page.locator("#tabs [aria-selected=true]").get_attribute("data-channel")

        def states() -> list[str]:
            return [str(a.get_attribute("data-state")) for a in shown.all()]

        page.locator("#filter").select_option("resolved")
        expect(check.card(TG_NAME)).to_have_count(1)
        assert set(states()) == {"resolved"}, states()
        page.locator("#filter").select_option("active")
        expect(check.card(TG_NAME)).to_have_count(0)
        assert set(states()) <= {"new", "open", "pending"}, states()
        page.locator("#filter").select_option("all")
        expect(check.card(TG_NAME)).to_have_count(1)
        page.locator("#sort").select_option("newest")
        stamps = [float(str(a.get_attribute("data-ts"))) for a in shown.all()]
        assert stamps == sorted(stamps, reverse=True), stamps
        page.locator("#sort").select_option("urgent")
        ranks = [
            (0 if a.get_attribute("data-state") in ("new", "open", "pending") else 1) * 10
            + ["urgent", "high", "normal", "low"].index(str(a.get_attribute("data-priority")))
            for a in shown.all()
        ]
        assert ranks == sorted(ranks), ranks
        for tab in page.locator("#tabs [role=tab]").all():
            tab.click()
            expect(tab).to_have_attribute("aria-selected", "true")
        page.locator(f"#tabs [data-channel={here}]").click()
        expect(check.card(TG_NAME)).to_have_count(1)
        return "resolved / active / all, newest / most urgent first, every tab"

    check.step("cards sort and filter; channels switch", sorts_and_filters)

    def whatsapp_window() -> str:
        # A day and an hour later WhatsApp takes only templates: the reply waits for the
        # customer, who is told by the reply_waiting template, and gets it when they answer.
        page.locator("#agent").select_option(label="Alice")
        page.locator("button[data-act=ff][data-minutes='1440']").click()
        page.locator("button[data-act=ff][data-minutes='60']").click()
        expect(page.locator("#ff-offset")).to_contain_text("25 h")
        check.find_card(WA_NAME)
        card = check.card(WA_NAME)
        # A day late, the SLA escalates first and hands the ticket to the team's lead; once it
        # has (and the later targets' alarms have rung too), Alice takes it back.
        expect(card.locator(".thread")).to_contain_text("Reassigned to")
        page.wait_for_timeout(3000)
        card.get_by_role("button", name="Claim").click()
        expect(card).to_contain_text("Claimed by Alice")
        expect(card).to_contain_text("WhatsApp window closed")
        box = card.locator("form.replyform input[type=text]")
        box.fill(LATE_REPLY)
        box.press("Enter")
        log = page.locator("#wa-log")
        template = log.locator(".bubble.them", has_text="We have an update on your ticket")
        expect(template).to_have_count(1)
        expect(template.locator(".meta")).to_contain_text("template ticket_update")
        expect(card.locator(".thread")).to_contain_text("sent as template")
        expect(log.locator(".bubble.them", has_text=LATE_REPLY)).to_have_count(0)
        check.wa_says("ok, what is it?")
        expect(log.locator(".bubble.them", has_text=LATE_REPLY)).to_have_count(1)
        return template.locator(".text").inner_text()

    check.step("25 hours later a WhatsApp reply waits for the customer's answer", whatsapp_window)

    def reminder() -> str:
        # The sandbox's automations: Alice's reply leaves the ticket waiting on the customer,
        # and 15 minutes later (one press of the fast-forward) the customer is reminded, once.
        card = check.card(WA_NAME)
        box = card.locator("form.replyform input[type=text]")
        box.fill("Does that help?")
        box.press("Enter")
        log = page.locator("#wa-log")
        expect(log.locator(".bubble.them", has_text="Does that help?")).to_have_count(1)
        page.locator("button[data-act=ff][data-minutes='15']").click()
        reminded = log.locator(".bubble.them", has_text="Are you still there?")
        expect(reminded).to_have_count(1, timeout=20_000)
        expect(card.locator(".thread")).to_contain_text("sandbox-pending-reminder")
        page.wait_for_timeout(3000)
        expect(reminded).to_have_count(1)  # once
        return reminded.locator(".text").inner_text()

    check.step("15 minutes after Alice's reply the customer is reminded, once", reminder)

    def email() -> str:
        # The email column: the desk's real email adapter reads the stand-in's IMAP mailbox and
        # sends through its SMTP server; the page shows the mails with their threading headers.
        page.locator("#agent").select_option(label="Alice")
        page.locator("#em-from").fill(EM_FROM)
        page.locator("#em-from").dispatch_event("change")
        page.locator("#em-name").fill(EM_NAME)
        page.locator("#em-subject").fill(EM_SUBJECT)
        page.locator("#em-text").press_sequentially(EM_TEXT)
        page.locator("#em-text").press("Enter")
        log = page.locator("#em-log")
        expect(log.locator(".bubble.me")).to_contain_text(EM_TEXT)
        ack = log.locator(".bubble.them").last
        expect(ack).to_contain_text("Thanks, we got your message")
        expect(ack.locator(".mailhead .token")).to_have_count(1)
        token = ack.locator(".mailhead .token").inner_text()
        expect(ack.locator(".mailhead")).to_contain_text("In-Reply-To: <")
        expect(log.locator(".bubble.me")).to_contain_text("read by the desk")
        check.find_card(EM_FROM)
        card = check.card(EM_FROM)
        expect(card).to_contain_text(EM_TEXT)
        box = card.locator("form.replyform input[type=text]")
        box.fill(EM_REPLY)
        box.press("Enter")
        answer = log.locator(".bubble.them", has_text=EM_REPLY)
        expect(answer).to_have_count(1)
        expect(answer.locator(".mailhead .token")).to_have_text(token)
        expect(answer.locator(".mailhead")).to_contain_text("In-Reply-To: <")
        answer.get_by_role("button", name="↩ Reply").click()
        expect(page.locator("#em-replying")).to_contain_text("Replying to")
        page.locator("#em-text").press_sequentially(EM_THANKS)
        page.locator("#em-text").press("Enter")
        expect(card.locator(".thread")).to_contain_text(EM_THANKS)
        # The quoted history under the customer's reply is not in the thread: Alice's words
        # are there once, as her own message.
        expect(card.locator(".thread .smsg", has_text=EM_REPLY[:20])).to_have_count(1)
        return f"{token} on the ack and on Alice's reply; the customer's reply joined the card"

    check.step("an email customer writes; Alice's reply arrives threaded, [#N] kept", email)

    check.step("the renderers show Slack text as Slack does", lambda: renderers(page))

    if skip_restart:
        print("skip the restart (--skip-restart)")
    else:
        restart(check, sandbox)

    def no_errors() -> None:
        missing = [r for r in check.failed_requests if r.startswith("404 ")]
        assert not missing, missing
        assert not check.page_errors, check.page_errors

    check.step("no script errors, nothing missing (the favicon included)", no_errors)


def restart(check: Check, sandbox: Sandbox) -> None:
    page = check.page

    def stops() -> str:
        status = sandbox.interrupt()
        expect(page.locator("#online")).to_have_text("sandbox not answering")
        return f"exit status {status}"

    check.step("Ctrl-C stops the sandbox; the page says so", stops)

    def starts() -> str:
        sandbox.start()
        expect(page.locator("#online")).to_have_text("sandbox running")
        return "same folder, same database"

    check.step("the sandbox starts again in the same folder", starts)

    def same_customer() -> str:
        before = page.locator("#tg-log .bubble.them").count()
        check.tg_says("还有一个问题")
        them = page.locator("#tg-log .bubble.them")
        expect(them).to_have_count(before + 1)
        # Her ticket (reopened, or a new one) is still in front of the agents.
        check.find_card(TG_NAME)
        return them.last.locator(".text").inner_text()

    check.step("the same customer writes again: answered, her card shown", same_customer)

    def new_customer() -> str:
        page.locator("#tg-new").click()
        page.locator("#tg-name").fill("Dara")
        page.locator("#tg-lang").select_option("en")
        check.tg_says("Hello, I was charged twice")
        expect(page.locator("#tg-log .bubble.them").last).to_contain_text(
            "Thanks, we got your message"
        )
        channel = check.find_card("Dara")
        chips = check.card("Dara").locator(".chips").inner_text().replace("\n", " ")
        return f"{channel}: {chips}"

    check.step("a brand-new customer writes after the restart: ack and card", new_customer)


# Tricky texts for the page's own renderers: (Slack text, what must be in the HTML, the text).
MRKDWN_CASES: list[tuple[str, list[str], str]] = [
    ("*Desk status* · 3 active", ["<b>Desk status</b>"], "Desk status · 3 active"),
    (
        "&lt;img src=x onerror=alert(1)&gt; &amp; co",
        ["&lt;img src=x onerror=alert(1)&gt; &amp; co"],
        "<img src=x onerror=alert(1)> & co",
    ),
    ("_it_ ~gone~ snake_case_name", ["<i>it</i>", "<s>gone</s>", "snake_case_name"], ""),
    ("`co*de*` and ```pre *x*```", ["<code>co*de*</code>", '<pre class="pre">pre *x*</pre>'], ""),
    ("> quoted &amp; fine\nafter", ["<blockquote>quoted &amp; fine</blockquote>after"], ""),
    ("• one\n• two", ["<ul><li>one</li><li>two</li></ul>"], ""),
    (
        "<@U0ALICE> see <https://example.com/a_b|the docs> :white_check_mark: :memo: :x:",
        ["@Alice</span>", 'href="https://example.com/a_b"', ">the docs</a>", "✅", "📝", "❌"],
        "",
    ),
    ("<@U0DESKBOT> and <#C0VIP> and <!here>", ["@deskbot", "#vip", "@here"], ""),
]
RICH_TEXT: dict[str, Any] = {
    "type": "rich_text",
    "elements": [
        {
            "type": "rich_text_section",
            "elements": [
                {"type": "text", "text": "Ann:", "style": {"bold": True}},
                {"type": "text", "text": " "},
                {"type": "user", "user_id": "U0BOB"},
                {"type": "emoji", "name": "star"},
                {"type": "emoji", "name": "thumbsup", "unicode": "1f44d"},
            ],
        },
        {
            "type": "rich_text_quote",
            "elements": [{"type": "text", "text": "my *star* & <b>x</b> _y_"}],
        },
        {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": "a  b"}]},
        {
            "type": "rich_text_list",
            "style": "bullet",
            "elements": [
                {"type": "rich_text_section", "elements": [{"type": "text", "text": "one"}]},
                {
                    "type": "rich_text_section",
                    "elements": [
                        {"type": "link", "url": "https://example.com", "text": "two"},
                        {"type": "text", "text": " x", "style": {"code": True, "strike": True}},
                    ],
                },
            ],
        },
    ],
}
RICH_TEXT_HTML = [
    "<b>Ann:</b>",
    "@Bob",
    "⭐",
    "👍",
    "<blockquote>my *star* &amp; &lt;b&gt;x&lt;/b&gt; _y_</blockquote>",
    '<pre class="pre">a  b</pre>',
    "<ul><li>one</li>",
    ">two</a><s><code> x</code></s></li></ul>",
]


def renderers(page: Page) -> str:
    got = page.evaluate(
        """(srcs) => srcs.map((s) => { const d = document.createElement("div");
             d.innerHTML = window.deskbotPage.mrkdwn(s); return [d.innerHTML, d.textContent]; })""",
        [src for src, _, _ in MRKDWN_CASES],
    )
    for (src, wants, text), (html, shown) in zip(MRKDWN_CASES, got, strict=True):
        for want in wants:
            assert want in html, f"{src!r} rendered as {html!r}: no {want!r}"
        assert not text or shown == text, f"{src!r} shows {shown!r}, not {text!r}"
        assert "<img" not in html, f"{src!r} let HTML through: {html!r}"
    html = page.evaluate(
        "(b) => window.deskbotPage.blocksHtml([b], {channel: 'C0SUPPORT', ts: '1.1'})", RICH_TEXT
    )
    for want in RICH_TEXT_HTML:
        assert want in html, f"rich_text rendered as {html!r}: no {want!r}"
    return f"{len(MRKDWN_CASES)} mrkdwn texts, 1 rich_text block"


@contextmanager
def _exit_on_failure() -> Iterator[None]:
    try:
        yield
    except CheckFailed as exc:
        print(f"browser check failed: {exc}")
        sys.exit(1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.browser_check", description=__doc__)
    # Not docs/sandbox.png: a check run must not rewrite a tracked file; ask for it with --out.
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "sandbox.png")
    parser.add_argument(
        "--skip-restart", action="store_true", help="stop before the Ctrl-C and restart steps"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with _exit_on_failure():
        run(args.out, args.skip_restart)


if __name__ == "__main__":
    main()
