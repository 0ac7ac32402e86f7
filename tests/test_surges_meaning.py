"""Surges grouped by meaning, through the desk with the local model: an outage reported in
eight wordings (to which the intent head gives different intents) is one to three incidents (not
a card per message), each card says truthfully why its tickets are together, and unrelated
messages stay alone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.surge_families import FAMILIES
from bot.base.settings import Settings
from bot.model import ModelClassifier
from storage.models import Incident, Ticket

from .test_desk_core import RULES, Harness, make_harness

pytestmark = pytest.mark.model

# The eight wordings of bench.surge's "app won't load" family (the benchmark measures the same).
WORDINGS = list(FAMILIES[0].phrasings)
TAILS = ["", " since this morning", " please fix it", "!!"]
UNRELATED = [
    "How do I change the delivery address for my order?",
    "Can I get an invoice for last month please",
    "What are your opening hours on Sunday?",
    "I'd like to cancel my subscription",
]


@pytest.fixture
async def desk(engine: AsyncEngine) -> AsyncIterator[Harness]:
    classifier = await ModelClassifier.create(Settings(database_url="sqlite://"), RULES)
    try:
        yield make_harness(engine, classifier=classifier)
    finally:
        await classifier.close()


async def test_an_outage_in_eight_wordings_is_one_incident_and_others_stay_alone(
    desk: Harness,
) -> None:
    texts = [w + TAILS[n % len(TAILS)] for n in range(5) for w in WORDINGS]  # 40, in turn
    texts[6:6] = UNRELATED[:2]
    texts[17:17] = UNRELATED[2:]
    for n, text in enumerate(texts):
        await desk.inbox.accept([desk.customer(text, chat=str(100 + n))], {})
        await desk.settle()
        desk.clock.advance(seconds=2)
    desk.clock.advance(seconds=7)
    await desk.settle()

    cards = [o for o in desk.slack.sent if o.kind == "slack_card"]
    incident_cards = [c for c in cards if c.incident_id is not None]
    assert 1 <= len(incident_cards) <= 3  # 3 in this order, every wording in turn
    for card in incident_cards:
        blocks = json.dumps(card.blocks, ensure_ascii=False)
        assert "Why together: similar wording (cosine 0." in blocks
        assert "to the incident's messages" in blocks and "intent" not in blocks
    async with desk.sessions() as s:
        tickets = (await s.scalars(select(Ticket).order_by(Ticket.id))).all()
        incidents = (await s.scalars(select(Incident))).all()
    assert len(incidents) == len(incident_cards)
    by_text = {t.subject: t for t in tickets}
    outage = [t for t in tickets if t.subject not in UNRELATED]
    attached = [t for t in outage if t.incident_id is not None]
    assert len(attached) >= 0.9 * len(outage) == 36
    assert all(by_text[u].incident_id is None for u in UNRELATED)
    # The unrelated ones have their cards; the outage is the incident card plus the few
    # tickets that came before it opened (they keep theirs): 15 of 40 in this in-turn order.
    own = [c for c in cards if c.incident_id is None]
    assert len(own) - len(UNRELATED) == sum(1 for t in outage if not t.incident_only) <= 15
    acks = {o.destination: o.text for o in desk.telegram.sent}
    assert "We know about this problem" in acks[str(100 + len(texts) - 1)]
