"""The ticket card: what an agent sees, within Slack's limits whatever the customer wrote."""

from __future__ import annotations

import json

from bot.workspace.cards import CardView, card_blocks, card_text


def _view(**kw: object) -> CardView:
    base: dict[str, object] = {
        "ticket_id": 12,
        "customer_name": "Ann <script>",
        "channel": "telegram",
        "status": "new",
        "priority": "urgent",
        "reasons": ("keyword 'outage' → urgent", "VIP customer → high"),
        "first_message": "Outage! & nothing works",
    }
    base.update(kw)
    return CardView(**base)  # type: ignore[arg-type]


def test_new_card_shows_priority_reasons_message_and_both_buttons() -> None:
    blocks = card_blocks(_view())
    text = json.dumps(blocks, ensure_ascii=False)
    assert "🔴 *#12* · *Ann &lt;script&gt;* via Telegram · priority *urgent*" in text
    assert "Why: keyword 'outage' → urgent; VIP customer → high" in text
    message = next(b for b in blocks if b["block_id"] == "message")
    assert message["type"] == "rich_text"  # the customer's text verbatim, not mrkdwn
    assert message["elements"][0]["elements"] == [
        {"type": "text", "text": "Outage! & nothing works"}
    ]
    actions = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [(a["action_id"], a["value"]) for a in actions] == [
        ("ticket_claim", "12"),
        ("ticket_resolve", "12"),
        ("ticket_history", "12"),  # the customer's whole story (bot/workspace/history.py)
    ]
    # The fallback text is mrkdwn: escaped, so a name or message can't mention or link.
    assert card_text(_view()).startswith("#12 URGENT · Ann &lt;script&gt; (Telegram): Outage!")


def test_claimed_and_resolved_cards_change_their_buttons() -> None:
    claimed = json.dumps(card_blocks(_view(status="open", assignee_id="U1")))
    assert "Claimed by <@U1>" in claimed and "ticket_claim" not in claimed
    assert "ticket_resolve" in claimed
    done = card_blocks(_view(status="resolved", assignee_id="U1", resolved_by="U1", rating=4))
    assert not [b for b in done if b["type"] == "actions"]
    assert "Resolved by <@U1> · rated 4/5" in json.dumps(done, ensure_ascii=False)


def test_a_huge_message_still_makes_a_valid_card() -> None:
    blocks = card_blocks(_view(first_message="x" * 20_000, reasons=("r" * 5000,)))
    for b in blocks:
        if b["type"] == "section":
            assert len(b["text"]["text"]) <= 3000
        if b["type"] == "rich_text":
            assert len(json.dumps(b)) <= 3200
    assert len(json.dumps(blocks)) < 12_000  # under Slack's msg_blocks_too_long


def test_the_models_reading_is_one_line_and_absent_without_the_model() -> None:
    from bot.workspace.cards import model_line

    assert model_line(None) is None and model_line({}) is None
    reading = {
        "intent": "get_refund",
        "intent_confidence": 0.931,
        "sentiment": "negative",
        "sentiment_scores": {"negative": 0.958, "neutral": 0.03, "positive": 0.012},
        "anger": 0.1204,
    }
    assert (
        model_line(reading)
        == "Model: intent get_refund 0.93 · sentiment negative 0.96 · anger 0.12"
    )
