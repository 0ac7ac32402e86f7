"""The card as plain dictionaries (bot/workspace/blockkit.py) is exactly what slack_sdk's Block
Kit models make of it, and over Slack's limits it is refused as the models refused it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from bot.workspace.blockkit import BlockKitError
from bot.workspace.cards import CardView, card_blocks

WORDS = st.text(min_size=1, max_size=30).filter(lambda t: t.strip() == t and t.strip())
MODEL = {
    "intent": "refund",
    "intent_confidence": 0.93,
    "sentiment": "negative",
    "sentiment_scores": {"negative": 0.9},
    "anger": 0.2,
}
SLA = {"first_response": {"state": "running", "due": "2026-12-07T10:00:00+00:00"}}


def through_the_sdk(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each block parsed into slack_sdk's models and made a dictionary again (validated)."""
    parsed = [Block.parse(b) for b in blocks]
    assert all(p is not None for p in parsed)
    return [p.to_dict() for p in parsed if p is not None]


views = st.builds(
    CardView,
    ticket_id=st.integers(1, 10**9),
    customer_name=st.text(max_size=300),
    channel=st.sampled_from(["telegram", "whatsapp"]),
    status=st.sampled_from(["new", "open", "pending", "resolved", "closed"]),
    priority=st.sampled_from(["urgent", "high", "normal", "low"]),
    reasons=st.lists(st.text(max_size=100), max_size=3).map(tuple),
    first_message=st.text(max_size=4000),
    assignee_id=st.none() | st.sampled_from(["U0ALICE", "U0BOB"]),
    resolved_by=st.none() | st.just("U0BOB"),
    rating=st.none() | st.integers(1, 5),
    blocked=st.booleans(),
    no_phone=st.booleans(),
    model=st.none() | st.just(MODEL),
    team=st.sampled_from(["", "support"]),
    assigned_by=st.none() | st.sampled_from(["desk", "U0BOB"]),
    waiting_reason=st.none() | st.just("nobody on shift"),
    transfer_to=st.lists(WORDS, max_size=3).map(tuple),
    sla=st.none() | st.just(SLA),
    tags=st.lists(WORDS, max_size=3).map(tuple),
    intent_label=st.none() | WORDS,
    tag_choices=st.lists(WORDS, max_size=4, unique=True).map(tuple),
    intent_choices=st.lists(WORDS, max_size=4, unique=True).map(tuple),
    revision=st.sampled_from(["", "18c2f"]),
    suggested=st.none() | st.text(max_size=300),
    kb=st.booleans(),
    reply_label=st.none() | st.sampled_from(["Reply to customer", "Reply with a macro"]),
    story=st.none() | st.just("2nd ticket in 30 days"),
    moved=st.none() | st.just("➡️ Transferred to team billing"),
    window=st.none() | st.just("WhatsApp: free-form until 10:00"),
)


@settings(max_examples=300, deadline=None)
@given(views)
def test_every_card_is_what_slack_sdk_makes_of_it(view: CardView) -> None:
    blocks = card_blocks(view)
    assert through_the_sdk(blocks) == blocks


@pytest.mark.parametrize(
    "change",
    [
        {"tag_choices": ("x" * 76,)},  # an option's text: 75 at most
        {"reply_label": "r" * 76},  # a button's text: 75 at most
        {"transfer_to": ("t" * 80,)},  # an option's text ("Team …"): 75 at most
    ],
)
def test_a_card_over_a_limit_is_refused_as_slack_sdk_refused_it(change: dict[str, Any]) -> None:
    # slack_sdk's models raised SlackObjectFormationError for each of these (the card's code
    # before bot/workspace/blockkit.py); the step fails and is retried, as it did then.
    view = CardView(
        **{
            "ticket_id": 7,
            "customer_name": "Ann",
            "channel": "telegram",
            "status": "open",
            "priority": "high",
            "reasons": (),
            "first_message": "hi",
            **change,
        }
    )
    with pytest.raises(BlockKitError):
        card_blocks(view)
