"""``deskbot nlp train --from-desk``: a company intent head from the agents' corrections.

When an agent corrects a ticket's intent on its card, the desk records a ticket event of kind
``intent`` (see bot/workspace/controls.py); the latest such event is the ticket's label and the
customer's
first message its text. A fifth of the corrected tickets (md5 of the ticket id) is held back;
a head is trained on the rest with the calibrated ``other`` threshold of every company head, and
both it and the head the desk uses now are measured on the held-back tickets, as the customer
would have met them (``other`` counts as wrong), so a supervisor can decide to switch.

It lives in bot/ because it reads the desk's database; nlp/ knows nothing of the desk.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select

from bot.base.settings import load_settings
from nlp.cli import missing_extra
from storage.db import create_engine, session_factory
from storage.models import Message, Ticket, TicketEvent

HELD_BACK_PERCENT = 20


@dataclass(frozen=True)
class Corrected:
    ticket_id: int
    text: str
    label: str
    said: str | None  # what the model answered when the ticket came in


def held_back(ticket_id: int) -> bool:
    """The same fifth of the tickets on every run (md5 of the id), so figures compare."""
    digest = hashlib.md5(f"ticket:{ticket_id}".encode()).hexdigest()[:8]
    return int(digest, 16) % 100 < HELD_BACK_PERCENT


async def corrected_tickets(url: str) -> list[Corrected]:
    """Every ticket whose intent an agent corrected: its latest correction and first message."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as s:
            events = (
                await s.execute(
                    select(TicketEvent.ticket_id, TicketEvent.to_value)
                    .where(TicketEvent.kind == "intent")
                    .order_by(TicketEvent.id)
                )
            ).all()
            latest: dict[int, str] = {}
            for ticket_id, value in events:
                if value:
                    latest[ticket_id] = value
                else:
                    latest.pop(ticket_id, None)  # a correction taken back
            out: list[Corrected] = []
            for ticket_id in sorted(latest):
                text = await s.scalar(
                    select(Message.text)
                    .where(Message.ticket_id == ticket_id, Message.direction == "in")
                    .order_by(Message.created_at, Message.id)
                    .limit(1)
                )
                ticket = await s.get(Ticket, ticket_id)
                said = (ticket.classification or {}).get("intent") if ticket else None
                if text and text.strip():
                    out.append(
                        Corrected(
                            ticket_id,
                            text,
                            latest[ticket_id],
                            said if isinstance(said, str) else None,
                        )
                    )
            return out
    finally:
        await engine.dispose()


def _as_seen(analyses: list[Any], truth: list[str]) -> tuple[int, int]:
    """(right, answered other) as the customer met them."""
    right = sum(a.intent == y for a, y in zip(analyses, truth, strict=True))
    other = sum(a.intent in (None, "other") for a in analyses)
    return right, other


def run(url: str, out: Path, stdout: TextIO) -> int:
    from nlp.service import TextAnalyser
    from nlp.train import train_intents

    examples = asyncio.run(corrected_tickets(url))
    train = [e for e in examples if not held_back(e.ticket_id)]
    held = [e for e in examples if held_back(e.ticket_id)]
    counts = Counter(e.label for e in train)
    usable = {y for y, n in counts.items() if n >= 2}
    dropped = sorted(set(counts) - usable)
    train = [e for e in train if e.label in usable]
    stdout.write(
        f"corrected tickets: {len(examples)} ({len({e.label for e in examples})} intents); "
        f"training on {len(train)}, held back {len(held)} (md5 of the ticket id)\n"
    )
    if dropped:
        stdout.write(f"left out, fewer than two training tickets: {', '.join(dropped)}\n")
    if len(usable) < 2:
        stdout.write(
            "not enough corrections to train a head: every intent needs two corrected tickets "
            "and at least two intents\n"
        )
        return 2
    settings = load_settings()
    current = TextAnalyser.load(
        encoder_dir=settings.encoder_dir,
        intent_dir=settings.model_dir,
        heads_dir=settings.heads_dir,
    )
    meta = train_intents(
        current.encoder,
        [e.text for e in train],
        [e.label for e in train],
        out,
        source="the desk's corrected tickets",
    )
    stdout.write(
        f"wrote {out} ({meta['version']}): {len(usable)} intents, "
        f"other below {meta['other_below']:.3f} ({meta['other_calibration']['method']})\n"
    )
    if not held:
        stdout.write("no held-back tickets yet: nothing to compare on\n")
        return 0
    new = TextAnalyser.load(
        encoder_dir=settings.encoder_dir, intent_dir=out, heads_dir=settings.heads_dir
    )
    texts, truth = [e.text for e in held], [e.label for e in held]
    rows = [
        ("the head the desk uses now", current.version, current.analyse_batch(texts)),
        ("the new head", new.version, new.analyse_batch(texts)),
    ]
    stdout.write(
        f"\non the {len(held)} held-back tickets (as the customer met them: `other` is wrong)\n"
    )
    for name, version, analyses in rows:
        right, other = _as_seen(analyses, truth)
        stdout.write(
            f"  {name:<28} {right / len(held):.3f} ({right}/{len(held)} right, "
            f"{other} answered other)  {version}\n"
        )
    said = sum(e.said == e.label for e in held)
    stdout.write(
        f"  {'what the desk said then':<28} {said / len(held):.3f} ({said}/{len(held)} right)\n"
        f"\nto switch: DESK_INTENT_MODEL={out} (then restart the desk)\n"
    )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="deskbot nlp train --from-desk", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--from-desk", action="store_true", required=True)
    parser.add_argument("--database", help="the desk's database URL (default: DESK_DATABASE_URL)")
    parser.add_argument("--out", type=Path, default=Path("models/from-desk"))
    args = parser.parse_args(argv)
    if (problem := missing_extra("train", torch=True)) is not None:
        print(problem, file=sys.stderr)
        return 2
    settings = load_settings()  # DESK_DATA_KEY too: the messages may be encrypted
    url = args.database or settings.database_url
    return run(url, args.out, sys.stdout)
