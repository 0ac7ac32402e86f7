"""English heads are never applied to text in another language: no invented sentiment."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot.cards import model_line
from nlp.cli import classify
from nlp.priority import KeywordRule, PriorityRules, Signals, decide
from nlp.service import TextAnalyser

ZH = "我的订单三天了还没到，太差劲了，我要退款！"
ES = "Mi pedido no ha llegado y nadie responde, es una vergüenza, quiero mi dinero"
RU = "Мой заказ не пришёл уже неделю, это безобразие, верните деньги"
EN = "My order has not arrived after a week, this is a disgrace"


@pytest.mark.model
def test_other_languages_get_no_english_scores(tmp_path: Path) -> None:
    analyser = TextAnalyser.load()
    out = io.StringIO()
    lines = [ZH, EN, ES, RU, "ok"]
    classify(
        io.StringIO("".join(json.dumps({"text": t}) + "\n" for t in lines)),
        out,
        model=None,
        rules_path=tmp_path / "none.yaml",
        analyser=analyser,
    )
    zh, en, es, ru, short = [json.loads(line) for line in out.getvalue().splitlines()]
    for row, language in ((zh, "zh"), (es, "es"), (ru, "ru")):
        assert row["language"] == language and row["applied"] is False
        assert row["sentiment"] is row["sentiment_scores"] is row["anger"] is None
        assert row["intent"] is None
        assert not any("sentiment" in r or "anger" in r for r in row["reasons"])
    assert en["language"] == "en" and en["applied"] is True
    assert en["sentiment"] == "negative"
    # Too short to tell: the desk's usual languages get the benefit of the doubt.
    assert short["language"] is None and short["applied"] is True


def test_the_card_says_the_model_was_not_applied() -> None:
    assert model_line({"language": "zh", "applied": False}) == "Model: not applied (zh)"
    line = model_line(
        {
            "language": "en",
            "applied": True,
            "intent": "get_refund",
            "intent_confidence": 0.93,
            "sentiment": "negative",
            "sentiment_scores": {"negative": 0.96},
            "anger": 0.12,
        }
    )
    assert line == "Model: intent get_refund 0.93 · sentiment negative 0.96 · anger 0.12"


def test_chinese_keywords_match_inside_a_sentence() -> None:
    rules = PriorityRules(
        keywords=[
            KeywordRule(match=["退款"], priority="high"),
            KeywordRule(match=["outage"], priority="urgent"),
        ]
    )
    assert decide(rules, Signals(text=ZH)).reasons == ("keyword '退款' → high",)
    assert decide(rules, Signals(text="no poutage here")).priority == "normal"
