"""Explainable priority: every rule that fires adds a reason; the highest level wins.

Pure Python, no model: the desk uses it with keyword/VIP/repeat signals alone when the model is
off, and with intent and sentiment signals when it is on. The rules come from the ``priority:``
section of ``rules.yaml`` (this model is embedded there), with sensible defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Priority = Literal["urgent", "high", "normal", "low"]
LEVELS: dict[str, int] = {"low": 0, "normal": 1, "high": 2, "urgent": 3}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeywordRule(_Strict):
    match: list[str] = Field(min_length=1)  # case-insensitive; whole words/phrases
    priority: Priority


class VipRule(_Strict):
    priority: Priority = "high"
    customers: list[str] = Field(default_factory=list)  # "telegram:<user id>", "whatsapp:<wa_id>"


class RepeatRule(_Strict):
    within_hours: float = Field(default=24, gt=0)
    count: int = Field(default=3, ge=1)  # earlier tickets in the window that make it a repeat
    priority: Priority = "high"


class SentimentRule(_Strict):
    negative_at_least: float = Field(default=0.85, ge=0, le=1)
    priority: Priority = "high"


class AngerRule(_Strict):
    at_least: float = Field(default=0.5, ge=0, le=1)
    priority: Priority = "urgent"


def _default_keywords() -> list[KeywordRule]:
    return [
        KeywordRule(
            match=["system down", "outage", "data breach", "hacked", "fraud"], priority="urgent"
        ),
        KeywordRule(
            match=["charged twice", "double charged", "refund", "cancel my account"],
            priority="high",
        ),
        # The same in Chinese, Spanish and Russian, whose messages the model does not score.
        KeywordRule(match=["系统崩溃", "被盗", "盗刷", "诈骗", "数据泄露"], priority="urgent"),
        KeywordRule(match=["退款", "退钱", "扣了两次", "重复扣款", "注销账户"], priority="high"),
        KeywordRule(
            match=["sistema caído", "fraude", "hackeado", "hackearon", "me robaron"],
            priority="urgent",
        ),
        KeywordRule(
            match=[
                "reembolso",
                "devolución del dinero",
                "cobrado dos veces",
                "cobraron dos veces",
                "cancelar mi cuenta",
            ],
            priority="high",
        ),
        KeywordRule(
            match=["система не работает", "мошенни", "взлом", "утечка данных"], priority="urgent"
        ),
        KeywordRule(
            match=["возврат", "верните деньги", "списали дважды", "удалить аккаунт"],
            priority="high",
        ),
    ]


def _default_intents() -> dict[str, Priority]:
    return {
        "payment_issue": "high",
        "complaint": "high",
        "get_refund": "high",
        "track_refund": "normal",
        "registration_problems": "high",
        "recover_password": "normal",
        "delete_account": "normal",
        "contact_human_agent": "normal",
        "review": "low",
        "newsletter_subscription": "low",
    }


class PriorityRules(_Strict):
    default: Priority = "normal"
    keywords: list[KeywordRule] = Field(default_factory=_default_keywords)
    vip: VipRule = Field(default_factory=VipRule)
    repeat: RepeatRule = Field(default_factory=RepeatRule)
    sentiment: SentimentRule = Field(default_factory=SentimentRule)
    anger: AngerRule = Field(default_factory=AngerRule)
    intents: dict[str, Priority] = Field(default_factory=_default_intents)
    intent_min_confidence: float = Field(default=0.5, ge=0, le=1)


@dataclass(frozen=True, slots=True)
class Signals:
    """What is known about one message when its priority is set."""

    text: str
    customer_key: str | None = None  # "telegram:42"; matched against vip.customers
    vip: bool = False  # already known to be VIP by other means
    recent_tickets: int = 0  # the customer's earlier tickets within repeat.within_hours
    intent: str | None = None
    intent_confidence: float | None = None
    sentiment: str | None = None
    sentiment_scores: Mapping[str, float] | None = None
    anger: float | None = None


@dataclass(frozen=True, slots=True)
class PriorityDecision:
    priority: Priority
    reasons: tuple[str, ...] = field(default_factory=tuple)


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    # Word boundaries so "refund" does not fire on "refunded"? It should: customers write both.
    # So the boundary is only at the start; "outage" still must not match "poutage". Chinese and
    # Japanese are written without spaces: a phrase in their script matches anywhere ("退款" in
    # "我要退款").
    folded = phrase.casefold()
    if _UNSPACED.match(folded):
        return re.compile(re.escape(folded))
    return re.compile(r"(?<!\w)" + re.escape(folded))


# CJK ideographs, kana, and CJK punctuation/fullwidth forms
_UNSPACED = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def decide(rules: PriorityRules, s: Signals) -> PriorityDecision:
    fired: list[tuple[Priority, str]] = []
    folded = s.text.casefold()
    for rule in rules.keywords:
        for phrase in rule.match:
            if _phrase_pattern(phrase).search(folded):
                fired.append((rule.priority, f"keyword '{phrase}'"))
                break
    if s.vip or (s.customer_key is not None and s.customer_key in rules.vip.customers):
        fired.append((rules.vip.priority, "VIP customer"))
    if s.recent_tickets >= rules.repeat.count:
        fired.append(
            (
                rules.repeat.priority,
                f"repeat contact: {s.recent_tickets} tickets in {rules.repeat.within_hours:g} h",
            )
        )
    if s.intent is not None and s.intent in rules.intents:
        conf = s.intent_confidence if s.intent_confidence is not None else 1.0
        if conf >= rules.intent_min_confidence:
            fired.append((rules.intents[s.intent], f"intent {s.intent} {conf:.2f}"))
    if s.sentiment_scores is not None:
        neg = float(s.sentiment_scores.get("negative", 0.0))
        if neg >= rules.sentiment.negative_at_least:
            fired.append((rules.sentiment.priority, f"negative sentiment {neg:.2f}"))
    if s.anger is not None and s.anger >= rules.anger.at_least:
        fired.append((rules.anger.priority, f"anger {s.anger:.2f}"))

    if not fired:
        return PriorityDecision(rules.default, (f"no rule fired: default {rules.default}",))
    top = max(fired, key=lambda f: LEVELS[f[0]])[0]
    # Highest first, so the card shows what decided it before what merely agreed.
    ordered = sorted(fired, key=lambda f: -LEVELS[f[0]])
    return PriorityDecision(top, tuple(f"{reason} → {level}" for level, reason in ordered))
