"""Explainable priority: every rule that fires adds a reason; the highest level wins.

Pure Python, no model: the desk uses it with keyword/VIP/repeat signals alone when the model is
off, and with intent and sentiment signals when it is on. The rules come from the ``priority:``
section of ``rules.yaml`` (this model is embedded there), with sensible defaults.
"""

from __future__ import annotations

import functools
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
    # Shown, not raising, by default: most problem reports read negative ("I forgot my password
    # and can't sign in", 0.88; "I don't know how to cancel order …", 0.98), and raising them
    # all says nothing. Anger, hostility, profanity and urgency keywords raise instead.
    negative_at_least: float = Field(default=0.85, ge=0, le=1)
    priority: Priority = "normal"


class ProfanityRule(_Strict):
    """Swearing, by word: an entry matches a whole word ("hell" is not "hello"); one ending in
    ``*`` matches every word it starts ("fuck*": "fucking"); one in Chinese script matches
    anywhere. The reason names the word as the customer wrote it."""

    priority: Priority = "high"
    words: list[str] = Field(default_factory=lambda: list(_PROFANITY))


class AngerRule(_Strict):
    at_least: float = Field(default=0.5, ge=0, le=1)
    priority: Priority = "urgent"


# The shipped lists (rules.yaml repeats them, so a team sees and edits them there).
_PROFANITY: tuple[str, ...] = (
    "fuck*",
    "motherfuck*",
    "shit",
    "shitty",
    "bullshit",
    "goddamn*",
    "damn",
    "damned",
    "dammit",
    "bloody",
    "crap",
    "crappy",
    "piss*",
    "bitch*",
    "bastard*",
    "asshole*",
    "wtf",
    "stfu",
    # Chinese, Spanish, Russian
    "他妈的",
    "妈的",
    "傻逼",
    "操你",
    "mierda",
    "joder",
    "puta*",
    "carajo",
    "coño",
    "cabrón",
    "pendejo*",
    "бля",
    "блять",
    "бляд*",
    "хуй*",
    "хуе*",
    "пизд*",
    "сука",
    "нахуй",
    "ебан*",
    "ебат*",
)
URGENT_KEYWORDS = (
    # outage
    "system down",
    "outage",
    "is down",
    "not working for anyone",
    # fraud, security
    "data breach",
    "hacked",
    "fraud",
    "unauthorized",
    "unauthorised",
    "stolen",
    "identity theft",
    # legal threats
    "lawyer",
    "attorney",
    "lawsuit",
    "legal action",
    "sue you",
    "suing",
    "take you to court",
    # safety
    "caught fire",
    "on fire",
    "smoke coming",
    "smoke from",
    "burning smell",
    "electric shock",
    "injured",
    "injury",
    "got hurt",
    "unsafe",
)
HIGH_KEYWORDS = (
    # money taken twice or wrongly
    "charged twice",
    "double charged",
    "charged me twice",
    "taken twice",
    "billed twice",
    "refund",
    "cancel my account",
    # hostility short of swearing
    "unacceptable",
    "useless",
    "incompetent",
    "idiot",
    "scam",
    "rip-off",
    "ripoff",
    "pathetic",
    "disgrace",
)


def _default_keywords() -> list[KeywordRule]:
    return [
        KeywordRule(match=list(URGENT_KEYWORDS), priority="urgent"),
        KeywordRule(match=list(HIGH_KEYWORDS), priority="high"),
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
    profanity: ProfanityRule = Field(default_factory=ProfanityRule)
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


# Cached: a message is checked against every keyword and profanity entry of the rules, and
# building each pattern again (casefold, escape, the script check, re's own cache lookup) was
# about as much as searching with it.
@functools.lru_cache(maxsize=4096)  # bounded: the rules can be reloaded
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    # Word boundaries so "refund" does not fire on "refunded"? It should: customers write both.
    # So the boundary is only at the start; "outage" still must not match "poutage". Chinese and
    # Japanese are written without spaces: a phrase in their script matches anywhere ("退款" in
    # "我要退款").
    folded = phrase.casefold()
    if _UNSPACED.match(folded):
        return re.compile(re.escape(folded))
    return re.compile(r"(?<!\w)" + re.escape(folded))


@functools.lru_cache(maxsize=4096)  # bounded: the rules can be reloaded
def _word_pattern(word: str) -> re.Pattern[str]:
    """A profanity entry: a whole word, every word it starts (``*``), or, in Chinese script,
    anywhere."""
    folded = word.casefold()
    stem = folded.removesuffix("*")
    if _UNSPACED.match(stem):
        return re.compile(re.escape(stem))
    tail = r"\w*" if folded.endswith("*") else ""
    return re.compile(r"(?<!\w)" + re.escape(stem) + tail + r"(?!\w)")


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
    for word in rules.profanity.words:
        found = _word_pattern(word).search(folded)
        if found:
            fired.append((rules.profanity.priority, f"profanity '{found.group(0)}'"))
            break

    if not fired:
        return PriorityDecision(rules.default, (f"no rule fired: default {rules.default}",))
    top = max(fired, key=lambda f: LEVELS[f[0]])[0]
    # Highest first, so the card shows what decided it before what merely agreed.
    ordered = sorted(fired, key=lambda f: -LEVELS[f[0]])
    return PriorityDecision(top, tuple(f"{reason} → {level}" for level, reason in ordered))
