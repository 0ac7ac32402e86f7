"""The offline language detector: what it says of real support messages, and when it declines."""

from __future__ import annotations

import pytest

from nlp.language import detect_language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Where is my refund? I paid last week and nothing arrived.", "en"),
        ("我的订单三天了还没到，太差劲了，我要退款！", "zh"),
        ("¿Dónde está mi pedido? Lo pagué hace una semana.", "es"),
        ("Где мой заказ? Я оплатил его неделю назад.", "ru"),
        ("Ma commande n'est toujours pas arrivée, que se passe-t-il ?", "fr"),
    ],
)
def test_detects_the_language_of_a_support_message(text: str, language: str) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize("text", ["ok", "👍", "123 456", "", "#42"])
def test_declines_when_the_text_says_too_little(text: str) -> None:
    assert detect_language(text) is None
