"""The shipped priority policy with the shipped model and rules.yaml, as a support lead reads it:
anger, hostility, profanity and urgency raise a ticket; a problem report's negative sentiment is
shown but does not raise it by itself. The reasons are the exact strings the card shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from nlp.priority import PriorityDecision, PriorityRules, Signals, decide
from nlp.service import TextAnalyser

RULES_YAML = Path(__file__).resolve().parents[2] / "rules.yaml"


def shipped_rules() -> PriorityRules:
    raw = yaml.safe_load(RULES_YAML.read_text(encoding="utf-8"))
    return PriorityRules.model_validate(raw["priority"])


@pytest.fixture(scope="module")
def judged() -> dict[str, PriorityDecision]:
    texts = [
        "I forgot my password and can't sign in, how do I reset it?",
        "I don't know how to cancel order 732201349959",
        "my account was charged twice, this is unacceptable, fix it NOW",
        "would it be possible to update the goddamn delivery address?",
    ]
    rules = shipped_rules()
    out = {}
    for text, a in zip(texts, TextAnalyser.load().analyse_batch(texts), strict=True):
        out[text] = decide(
            rules,
            Signals(
                text=text,
                intent=a.intent,
                intent_confidence=a.intent_confidence,
                sentiment=a.sentiment,
                sentiment_scores=a.sentiment_scores,
                anger=a.anger,
            ),
        )
    return out


def _shown_only(reasons: tuple[str, ...]) -> bool:
    """Every reason left the ticket at normal (intents a team maps to normal, sentiment)."""
    return all(r.endswith("→ normal") for r in reasons)


@pytest.mark.model
def test_a_problem_reports_negative_sentiment_does_not_raise_it(
    judged: dict[str, PriorityDecision],
) -> None:
    for text in (
        "I forgot my password and can't sign in, how do I reset it?",
        "I don't know how to cancel order 732201349959",
    ):
        d = judged[text]
        assert d.priority == "normal", (text, d)
        assert _shown_only(d.reasons), d
    # still on the card, as information, where the sentiment reaches the rules' threshold
    # (the password question reads 0.83 negative since the n-gram blend, under the 0.85)
    cancel = judged["I don't know how to cancel order 732201349959"]
    assert any(re.fullmatch(r"negative sentiment 0\.\d\d → normal", r) for r in cancel.reasons)


@pytest.mark.model
def test_money_taken_twice_with_hostility_is_raised_with_exact_reasons(
    judged: dict[str, PriorityDecision],
) -> None:
    d = judged["my account was charged twice, this is unacceptable, fix it NOW"]
    assert d.priority in ("urgent", "high")
    # the first matching phrase of the rule is its reason ("unacceptable" is in the same list)
    assert "keyword 'charged twice' → high" in d.reasons
    assert d.reasons[0] == "keyword 'charged twice' → high" or re.fullmatch(
        r"anger [01]\.\d\d → urgent", d.reasons[0]
    )


@pytest.mark.model
def test_profanity_in_a_polite_request_raises_it_and_says_why(
    judged: dict[str, PriorityDecision],
) -> None:
    d = judged["would it be possible to update the goddamn delivery address?"]
    assert d.priority in ("urgent", "high")
    assert "profanity 'goddamn' → high" in d.reasons
    # the hostility head reads it as anger too (Bitext's offensive requests)
    assert any(re.fullmatch(r"anger [01]\.\d\d → urgent", r) for r in d.reasons)


def test_the_shipped_rules_are_the_code_defaults() -> None:
    """One policy: rules.yaml spells out what PriorityRules() does without it (the English
    keywords, profanity, sentiment and anger; the other languages' keywords follow)."""
    shipped, defaults = shipped_rules(), PriorityRules()
    assert shipped.profanity == defaults.profanity
    assert shipped.sentiment == defaults.sentiment and shipped.anger == defaults.anger
    assert shipped.keywords == defaults.keywords
    assert shipped.intents == defaults.intents


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("our whole team is locked out, the system is down", "keyword 'is down' → urgent"),
        ("someone made an unauthorized payment from my card", "keyword 'unauthorized' → urgent"),
        ("I will have my lawyer contact you", "keyword 'lawyer' → urgent"),
        ("the charger caught fire last night", "keyword 'caught fire' → urgent"),
        ("you took the money twice, I was billed twice", "keyword 'billed twice' → high"),
        ("what the fuck is going on with my order", "profanity 'fuck' → high"),
        ("this fucking app", "profanity 'fucking' → high"),
        ("esto es una mierda", "profanity 'mierda' → high"),
        ("这他妈的是什么服务", "profanity '他妈的' → high"),
        ("где мой заказ, блять", "profanity 'блять' → high"),
    ],
)
def test_urgency_and_profanity_in_the_shipped_rules(text: str, reason: str) -> None:
    d = decide(shipped_rules(), Signals(text=text))
    assert reason in d.reasons and d.reasons[0] == reason


@pytest.mark.parametrize(
    "text",
    [
        "hello, can you help me?",
        "I need to assess the shipping options",  # "ass" is not a word here
        "Scunthorpe office hours",
        "hell's kitchen restaurant gift card",
        "Я сегодня забыл пароль",
    ],
)
def test_no_profanity_in_ordinary_words(text: str) -> None:
    assert not any(
        r.startswith("profanity") for r in decide(shipped_rules(), Signals(text=text)).reasons
    )


def test_sentiment_can_still_raise_when_a_team_says_so() -> None:
    rules = PriorityRules.model_validate({"sentiment": {"priority": "high"}})
    scores = {"negative": 0.9, "neutral": 0.08, "positive": 0.02}
    d = decide(rules, Signals(text="x", sentiment_scores=scores))
    assert (d.priority, d.reasons) == ("high", ("negative sentiment 0.90 → high",))


@pytest.mark.model
def test_billing_complaints_reach_a_billing_intent() -> None:
    """Issue 23 D: Bitext's templated requests left these `other` or elsewhere; the shipped
    intent head is trained with hand-written billing complaints (nlp/supplement/)."""
    analyser = TextAnalyser.load()
    texts = {
        "my account was charged twice, this is unacceptable, fix it NOW": {"payment_issue"},
        "I was charged twice for my subscription": {"payment_issue"},
        # Two billing requests in one: since the intent head also reads the words
        # (intent-ngrams.npz) "the invoice is wrong" wins (check_invoice, 0.65); both intents
        # go to the billing team, and the keyword 'refund' keeps it high.
        "I need a refund, the invoice is wrong": {"get_refund", "check_invoice"},
    }
    for a, (text, intents) in zip(analyser.analyse_batch(list(texts)), texts.items(), strict=True):
        assert a.intent in intents, (text, a.intent, a.intent_confidence)
