"""Self-service decisions without I/O: the customer's language."""

from __future__ import annotations

import pytest

from bot.rules import CustomerTexts
from bot.selfservice import choose_language
from nlp.language import detect_language


@pytest.mark.parametrize(
    ("hint", "detected", "chosen"),
    [
        (None, None, None),  # WhatsApp and a message too short to tell
        (None, "zh", "zh"),  # WhatsApp: the text decides
        ("zh-hans", "zh", "zh-hans"),  # agreeing: the hint, more precise, stays
        ("en", "ru", "ru"),  # an English app, Russian words: the words win
        ("es", None, "es"),  # "ok": the hint stands
    ],
)
def test_choose_language(hint: str | None, detected: str | None, chosen: str | None) -> None:
    assert choose_language(hint, detected) == chosen


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Where is my refund? I returned the parcel two weeks ago.", "en"),
        ("我的订单还没到，请帮我查一下", "zh"),
        ("¿Dónde está mi reembolso? Devolví el paquete hace dos semanas.", "es"),
        ("Где мой возврат? Я отправил посылку две недели назад.", "ru"),
        ("ok", None),
        ("👍👍", None),
        ("#123", None),
    ],
)
def test_detects_support_messages_and_declines_what_says_too_little(
    text: str, language: str | None
) -> None:
    assert detect_language(text) == language


def test_the_four_shipped_languages_have_built_in_texts() -> None:
    texts = CustomerTexts()
    assert set(texts.languages) == {"en", "zh", "es", "ru"}
    assert texts.for_language("ru").ack.startswith("Спасибо")
    assert texts.for_language("es-MX").ack.startswith("Gracias")
