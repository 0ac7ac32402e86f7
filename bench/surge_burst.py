"""A surge end to end, with the stand-ins' real rate limits: many customers write about one
outage at once, mixed with unrelated messages (a few urgent), on WhatsApp.

Measures what issue 13 asks: how soon every urgent ticket is visible in Slack, that the outage
is one incident card, the time until every ticket is visible (its own card, or listed in the
incident's thread), the number of Slack posts, and that Reply to all affected (through the
modal) reaches every affected customer exactly once and Resolve incident resolves them all.

    python -m bench.surge_burst                      # 300: 250 outage, 50 other (5 urgent)
    python -m bench.surge_burst --processes 2 --database postgresql+asyncpg://…

``--processes 2`` runs two desks in this process on one database (as tests/e2e/test_processes
does): they compete for the same inbox and outbox rows; it needs PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.app import DeskApp
from bot.base.settings import Settings, SlackSettings, WhatsAppSettings
from bot.domain.rules import Rules, load_rules
from sandbox import StandIns
from sandbox.ports import free_port as _free_port
from storage.db import create_engine, session_factory
from storage.models import Incident, Ticket

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = "C0SUPPORT"
AGENT = "U0ALICE"
REPLY = "Update: the outage is fixed, the app works again. Sorry for the trouble!"
OUTAGE = [
    "The app is down, is there an outage? I can't log in",
    "Outage again?? nothing loads since 10 minutes",
    "hi, your site shows an error page, outage on your side?",
    "Is there an outage right now, payments page won't open",
    "the app keeps crashing, must be an outage",
    "I get 503 errors everywhere. Outage?",
    "Outage in Madrid? the app does not open",
    "can't check my order, the whole app is down (outage?)",
]
OTHER = [
    "Where is my order {n}? It was due yesterday",
    "How do I change my delivery address for order {n}?",
    "Can I get an invoice for order {n} please",
    "What are your opening hours on Sunday?",
    "I want to change the size of the shoes in order {n}",
    "Do you ship to Canada?",
    "How can I update my email address",
    "The discount code SPRING{n} does not work",
    "I would like to leave a review for the courier",
    "Can you tell me when the blue jacket is back in stock?",
]
URGENT = [
    "My account was hacked, someone changed my password",
    "I think there was a data breach, I got a strange email with my details",
    "Fraud: someone used my card in your shop",
    "Our system down at the store since noon, the card terminal is dead",
    "Мошенники списали деньги с моей карты",
]
TOKENS = {
    "wa": ("wa-token", "10000001", "wa-app-secret_1", "wa-verify"),
    "slack": ("xoxb-sandbox-token", "slack-signing-secret_1"),
}


@dataclass
class BurstResult:
    outage: int
    other: int
    urgent: int
    processes: int
    slack_posts: int = 0
    slack_updates: int = 0
    incidents: int = 0
    incident_cards: int = 0
    own_cards: int = 0
    urgent_visible_s: float | None = None
    all_visible_s: float | None = None
    replied: int = 0
    replied_twice: int = 0
    reply_to_others: int = 0
    reply_s: float | None = None
    resolved: int = 0
    resolve_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        def secs(v: float | None) -> str:
            return "not reached" if v is None else f"{v:.1f} s"

        return [
            f"burst: {self.outage + self.other} messages ({self.outage} about one outage,"
            f" {self.other} unrelated, {self.urgent} of those urgent), {self.processes}"
            " desk process(es), Slack stand-in rate limits on",
            f"Slack posts (chat.postMessage): {self.slack_posts}; card updates (chat.update):"
            f" {self.slack_updates}",
            f"incidents opened: {self.incidents}; incident cards: {self.incident_cards};"
            f" ticket cards: {self.own_cards}",
            f"every urgent unrelated ticket visible after: {secs(self.urgent_visible_s)}",
            f"every ticket visible (own card or listed in the incident) after:"
            f" {secs(self.all_visible_s)}",
            f"reply to all affected: {self.replied}/{self.outage} customers reached,"
            f" {self.replied_twice} twice, {self.reply_to_others} unrelated reached;"
            f" all in {secs(self.reply_s)}",
            f"resolve incident: {self.resolved}/{self.outage} tickets resolved in"
            f" {secs(self.resolve_s)}",
            *self.notes,
        ]


def _body(message: dict[str, Any]) -> str:
    if "text" in message and isinstance(message["text"], dict):
        return str(message["text"].get("body", ""))
    return str((message.get("interactive") or {}).get("body", {}).get("text", ""))


def _settings(standins: StandIns, database_url: str, port: int) -> Settings:
    token, phone, secret, verify = TOKENS["wa"]
    return Settings(
        database_url=database_url,
        http_host="127.0.0.1",
        http_port=port,
        whatsapp=WhatsAppSettings(
            access_token=token,
            phone_number_id=phone,
            app_secret=secret,
            verify_token=verify,
            api_base=standins.whatsapp_api_base,
        ),
        slack=SlackSettings(
            bot_token=TOKENS["slack"][0],
            signing_secret=TOKENS["slack"][1],
            api_base=standins.slack_api_base,
        ),
    )


def _rules() -> Rules:
    rules = load_rules(ROOT / "rules.yaml")
    return rules.model_copy(update={"teams": {}, "routing": ()})  # one team, Claim only


async def _until(probe: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return True
        await asyncio.sleep(step)
    return bool(await probe())


async def run_burst(
    database_url: str,
    *,
    outage: int = 250,
    other: int = 50,
    urgent: int = 5,
    processes: int = 1,
    timeout: float = 600,
) -> BurstResult:
    result = BurstResult(outage, other, urgent, processes)
    port = _free_port()
    token, phone, secret, _ = TOKENS["wa"]
    standins = StandIns(
        desk_url=f"http://127.0.0.1:{port}",
        telegram_token="1:sandbox",
        whatsapp_access_token=token,
        whatsapp_phone_number_id=phone,
        whatsapp_app_secret=secret,
        slack_bot_token=TOKENS["slack"][0],
        slack_signing_secret=TOKENS["slack"][1],
        rate_limits=True,
        retry_base_delay=0.05,
    )
    await standins.start()
    rules = _rules()
    settings = _settings(standins, database_url, port)
    desks = [DeskApp(settings, rules, idle_poll=0.05)]
    for _ in range(processes - 1):
        desks.append(
            DeskApp(dataclasses.replace(settings, http_port=_free_port()), rules, idle_poll=0.05)
        )
    for d in desks:
        await d.start()
    slack, wa = standins.slack, standins.whatsapp
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        rnd = random.Random(13)
        people: list[tuple[str, str, str]] = []  # (wa_id, text, kind)
        for n in range(outage):
            people.append((f"1555100{n:04d}", f"{OUTAGE[n % len(OUTAGE)]} ({n})", "outage"))
        for n in range(other - urgent):
            text = OTHER[n % len(OTHER)].format(n=1000 + n)
            people.append((f"1555200{n:04d}", text, "other"))
        for n in range(urgent):
            people.append((f"1555300{n:04d}", URGENT[n % len(URGENT)], "urgent"))
        head, tail = people[:5], people[5:]  # the outage starts it; the rest interleaved
        rnd.shuffle(tail)
        people = head + tail
        gate = asyncio.Semaphore(25)

        async def says(wa_id: str, text: str) -> None:
            async with gate:
                await wa.customer_says(wa_id, text, name=f"C{wa_id[-4:]}")

        t0 = time.monotonic()
        await asyncio.gather(*(says(w, t) for w, t, _ in people))

        def cards() -> list[dict[str, Any]]:
            return [m for m in slack.messages(SUPPORT) if m.get("blocks")]

        def incident_cards() -> list[dict[str, Any]]:
            return [m for m in cards() if "incident_reply_all" in json.dumps(m["blocks"])]

        urgent_ids = {w for w, _, k in people if k == "urgent"}

        async def urgent_seen() -> bool:
            texts = " ".join(m.get("text", "") for m in cards())
            return all(f"C{w[-4:]}" in texts for w in urgent_ids)

        if await _until(urgent_seen, 60, 0.05):
            result.urgent_visible_s = time.monotonic() - t0

        unseen: list[str] = []

        async def everyone_visible() -> bool:
            async with sessions() as s:
                rows = (
                    await s.execute(
                        select(
                            Ticket.id,
                            Ticket.incident_only,
                            Ticket.incident_id,
                            Ticket.incident_listed,
                        )
                    )
                ).all()
            if len(rows) < len(people):
                unseen[:] = [f"{len(rows)} of {len(people)} tickets made"]
                return False
            shown = " ".join(m.get("text", "") for m in cards())
            listed = " ".join(
                r.get("text", "")
                for inc in incident_cards()
                for r in slack.thread(SUPPORT, inc["ts"])
            )
            listed_ids = set(re.findall(r"#(\d+) ·", listed))
            carded = set(re.findall(r"#(\d+) ", shown))
            unseen[:] = [
                f"#{t} (incident {inc}, only there: {only}, list post {post})"
                for t, only, inc, post in rows
                if str(t) not in (listed_ids if only else carded)
            ]
            return not unseen

        if await _until(everyone_visible, timeout, 0.5):
            result.all_visible_s = time.monotonic() - t0
        else:  # what a failed run needs to be understood
            result.notes.append("not visible at the end: " + ", ".join(unseen[:20]))
        result.incident_cards = len(incident_cards())
        result.own_cards = len(cards()) - result.incident_cards
        async with sessions() as s:
            result.incidents = int(await s.scalar(select(func.count()).select_from(Incident)) or 0)
        if result.incident_cards != 1:
            result.notes.append("no single incident card: reply and resolve not tried")
            return result

        # Reply to all affected: the button, the modal, its preview, Send.
        card = incident_cards()[0]
        t1 = time.monotonic()
        await slack.agent_clicks(SUPPORT, card["ts"], "incident_reply_all", AGENT)
        modal = slack.modal_of(AGENT)
        if modal is None:
            result.notes.append("the Reply to all affected modal did not open")
            return result
        view_id = modal["id"]
        await slack.agent_submits(view_id, AGENT, {"text.en": {"text": REPLY}})
        await slack.agent_submits(view_id, AGENT)
        outage_ids = [w for w, _, k in people if k == "outage"]

        def reached() -> list[int]:
            return [sum(_body(m) == REPLY for m in wa.sent_to(w)) for w in outage_ids]

        async def all_reached() -> bool:
            return all(n >= 1 for n in reached())

        if await _until(all_reached, timeout, 0.2):
            result.reply_s = time.monotonic() - t1
        await asyncio.sleep(2)  # a double would come now
        counts = reached()
        result.replied = sum(n >= 1 for n in counts)
        result.replied_twice = sum(n > 1 for n in counts)
        result.reply_to_others = sum(
            _body(m) == REPLY for w, _, k in people if k != "outage" for m in wa.sent_to(w)
        )

        # Resolve incident.
        t2 = time.monotonic()
        await slack.agent_clicks(SUPPORT, card["ts"], "incident_resolve", AGENT)

        async def resolved() -> int:
            async with sessions() as s:
                return int(
                    await s.scalar(
                        select(func.count())
                        .select_from(Ticket)
                        .where(Ticket.incident_id.is_not(None), Ticket.status == "resolved")
                    )
                    or 0
                )

        async def all_resolved() -> bool:
            if await resolved() < outage:
                return False
            return all(any("is resolved" in _body(m) for m in wa.sent_to(w)) for w in outage_ids)

        if await _until(all_resolved, timeout, 0.2):
            result.resolve_s = time.monotonic() - t2
        result.resolved = await resolved()
        return result
    finally:
        result.slack_posts = slack.calls.count("chat.postMessage")
        result.slack_updates = slack.calls.count("chat.update")
        for d in desks:
            await d.stop()
        await standins.stop()
        await engine.dispose()


def _database(url: str | None) -> str:
    # The desk migrates the database when it starts.
    return url or f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/surge.db"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=int, default=250)
    parser.add_argument("--other", type=int, default=50)
    parser.add_argument("--urgent", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--database", help="a fresh database URL (default: a temporary SQLite)")
    args = parser.parse_args()

    async def go() -> BurstResult:
        return await run_burst(
            _database(args.database),
            outage=args.outage,
            other=args.other,
            urgent=args.urgent,
            processes=args.processes,
        )

    for line in asyncio.run(go()).lines():
        print(line)


if __name__ == "__main__":
    main()
