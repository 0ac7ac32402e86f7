"""``deskbot nlp train --from-desk``: agents' "Correct intent" choices (ticket events of kind
``intent``) train a company head, calibrated like every head, and the command prints how it
and the head the desk uses now do on the held-back tickets."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.cli import main
from bot.commands.learn import held_back
from storage.db import create_engine, migrate, session_factory
from storage.models import Customer, Message, Ticket, TicketEvent

pytestmark = pytest.mark.model

CORRECTED = {
    "card_delivery": [
        "when will my new card arrive",
        "my card still has not been delivered",
        "how long does the card take to come in the post",
        "I ordered a card two weeks ago and it is not here",
        "is my card on its way",
        "the card you sent never arrived",
        "where is the card I ordered",
        "card delivery is taking forever",
        "has my replacement card been posted yet",
        "tracking for my card please",
    ],
    "exchange_rate": [
        "what exchange rate do you use",
        "how much is a euro in dollars today",
        "why was the currency conversion so bad",
        "which rate applies when I pay abroad",
        "the exchange rate on my statement is wrong",
        "do you add a margin on the conversion rate",
        "rate for pounds to yen",
        "how is the rate for foreign payments set",
        "is your exchange rate the market rate",
        "currency rate for my trip to Japan",
    ],
    "top_up": [
        "how do I top up my account",
        "my top up failed",
        "can I add money with a bank transfer",
        "top up by card is not working",
        "the money I topped up is not showing",
        "how long does a top up take",
        "add funds to my balance",
        "is there a fee to top up",
        "top up was declined",
        "I want to put money on my account",
    ],
}


async def _seed(url: str) -> list[int]:
    engine = create_engine(url)
    await migrate(engine)
    now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    ids = []
    async with session_factory(engine)() as s, s.begin():
        customer = Customer(name="Ann", created_at=now)
        s.add(customer)
        await s.flush()
        for label, texts in CORRECTED.items():
            for text in texts:
                ticket = Ticket(
                    customer_id=customer.id,
                    channel="telegram",
                    chat_id="1",
                    status="resolved",
                    priority="normal",
                    classification={"intent": "other"},  # what the model had said
                    created_at=now,
                    updated_at=now,
                )
                s.add(ticket)
                await s.flush()
                ids.append(ticket.id)
                s.add(
                    Message(
                        ticket_id=ticket.id,
                        direction="in",
                        author="customer",
                        channel="telegram",
                        text=text,
                        created_at=now,
                    )
                )
                s.add(
                    Message(
                        ticket_id=ticket.id,
                        direction="out",
                        author="U1",
                        channel="telegram",
                        text="We are on it",
                        created_at=now,
                    )
                )
                for to in ("wrong_guess", label):  # the latest correction is the label
                    s.add(
                        TicketEvent(
                            ticket_id=ticket.id,
                            kind="intent",
                            actor="U1",
                            from_value="other",
                            to_value=to,
                            reason="corrected on the card",
                            at=now,
                        )
                    )
        # a ticket nobody corrected is not a training example
        plain = Ticket(
            customer_id=customer.id,
            channel="telegram",
            chat_id="1",
            status="open",
            priority="normal",
            created_at=now,
            updated_at=now,
        )
        s.add(plain)
    await engine.dispose()
    return ids


def test_a_head_from_corrected_tickets_and_how_it_compares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DESK_MODEL_DIR", "DESK_INTENT_MODEL", "DESK_HEADS", "DESK_ENCODER"):
        monkeypatch.delenv(name, raising=False)
    url = f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"
    ids = asyncio.run(_seed(url))
    held = sum(held_back(i) for i in ids)
    assert 0 < held < len(ids)
    out = tmp_path / "from-desk"

    code = main(["nlp", "train", "--from-desk", "--database", url, "--out", str(out)])

    said = capsys.readouterr().out
    assert code == 0, said
    assert f"corrected tickets: 30 (3 intents); training on {30 - held}, held back {held}" in said
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["heads"]["intent"]["labels"] == sorted(CORRECTED)
    assert meta["other_calibration"]["method"] == "5-fold cross-validation"
    assert f"other below {meta['other_below']:.3f}" in said
    lines = {line.strip().split("  ")[0]: line for line in said.splitlines() if "right" in line}
    # the shipped head knows none of these intents; the new one answers most of them
    assert f"0.000 (0/{held} right" in lines["the head the desk uses now"]
    new_right = int(lines["the new head"].split("(")[1].split("/")[0])
    assert new_right >= held - 1, said
    assert f"0.000 (0/{held} right)" in lines["what the desk said then"]
    assert f"DESK_INTENT_MODEL={out}" in said
