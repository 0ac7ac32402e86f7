"""Priority from the model's signals: each rule that fires is a reason; the highest wins."""

from __future__ import annotations

from nlp.priority import PriorityRules, Signals, decide

RULES = PriorityRules()
CALM = {"negative": 0.1, "neutral": 0.6, "positive": 0.3}


def test_anger_makes_it_urgent_and_says_so() -> None:
    d = decide(RULES, Signals(text="where is my parcel", anger=0.91, sentiment_scores=CALM))
    assert d.priority == "urgent"
    assert d.reasons == ("anger 0.91 → urgent",)


def test_strong_negative_sentiment_is_shown_but_does_not_raise() -> None:
    scores = {"negative": 0.9, "neutral": 0.08, "positive": 0.02}
    d = decide(RULES, Signals(text="this is bad", sentiment="negative", sentiment_scores=scores))
    assert (d.priority, d.reasons) == ("normal", ("negative sentiment 0.90 → normal",))


def test_intent_counts_only_when_confident() -> None:
    sure = decide(RULES, Signals(text="x", intent="payment_issue", intent_confidence=0.8))
    unsure = decide(RULES, Signals(text="x", intent="payment_issue", intent_confidence=0.3))
    review = decide(RULES, Signals(text="x", intent="review", intent_confidence=0.9))
    assert (sure.priority, sure.reasons) == ("high", ("intent payment_issue 0.80 → high",))
    assert (unsure.priority, unsure.reasons) == ("normal", ("no rule fired: default normal",))
    assert review.priority == "low"


def test_other_intent_maps_to_nothing() -> None:
    d = decide(RULES, Signals(text="hello", intent="other", intent_confidence=0.2))
    assert d.priority == "normal"


def test_every_fired_rule_is_listed_highest_first() -> None:
    d = decide(
        RULES,
        Signals(
            text="I want a refund",
            recent_tickets=4,
            intent="get_refund",
            intent_confidence=0.95,
            anger=0.8,
            sentiment_scores=CALM,
        ),
    )
    assert d.priority == "urgent"
    assert d.reasons[0] == "anger 0.80 → urgent"
    assert set(d.reasons[1:]) == {
        "keyword 'refund' → high",
        "repeat contact: 4 tickets in 24 h → high",
        "intent get_refund 0.95 → high",
    }


def test_thresholds_come_from_the_rules() -> None:
    rules = PriorityRules.model_validate(
        {"anger": {"at_least": 0.95, "priority": "high"}, "intents": {"complaint": "urgent"}}
    )
    assert decide(rules, Signals(text="x", anger=0.9)).priority == "normal"
    d = decide(rules, Signals(text="x", intent="complaint", intent_confidence=0.7, anger=0.96))
    assert d.priority == "urgent"
    assert d.reasons == ("intent complaint 0.70 → urgent", "anger 0.96 → high")
