"""Self-service decisions: the customer's language, status requests and their limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain.customer_requests import (
    STATUS_BUTTON,
    StatusRequest,
    my_tickets_button,
    parse_status_request,
    status_request_of,
    status_words,
)
from bot.domain.events import CustomerMessage, Sender
from bot.domain.language import choose_language
from bot.domain.rules import CustomerTexts, RulesError, load_rules, parse_rules
from nlp.language import SHIPPED_DESK_LANGUAGES, detect_language
from storage.models import Customer
from tests.test_desk_core import Harness, make_harness


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


# -- status by ticket number ---------------------------------------------------------------

SHIPPED = load_rules(Path(__file__).parent.parent / "rules.yaml")
WORDS = status_words(SHIPPED)


@pytest.mark.parametrize(
    ("text", "ticket", "language"),
    [
        ("/status", None, None),
        ("/status 123", 123, None),
        ("/status #123", 123, None),
        ("/status@acme_help_bot 9", 9, None),
        ("#123", 123, None),
        ("# 123", 123, None),
        ("status 123", 123, None),
        ("Status: #123", 123, None),
        ("STATUS", None, None),
        ("状态 123", 123, "zh"),
        ("状态123", 123, "zh"),
        ("estado 123", 123, "es"),
        ("Estado #5?", 5, "es"),
        ("статус 123", 123, "ru"),
        ("Статус", None, "ru"),
    ],
)
def test_status_requests(text: str, ticket: int | None, language: str | None) -> None:
    assert parse_status_request(text, WORDS) == StatusRequest(ticket, language)


@pytest.mark.parametrize(
    "text",
    [
        "what is the status of 123?",  # a question for a person: becomes a ticket
        "status 123 please hurry",
        "order #123 is late",
        "#abc",
        "#1234567890123",  # longer than any ticket number
        "hello",
        "/start",
        "/statuses",
    ],
)
def test_messages_that_are_not_only_a_lookup(text: str) -> None:
    assert parse_status_request(text, WORDS) is None


def test_lookups_off_means_no_button_and_no_lookups() -> None:
    off = SHIPPED.model_copy(
        update={"status_lookup": SHIPPED.status_lookup.model_copy(update={"enabled": False})}
    )
    texts = off.texts.for_language("en")
    assert my_tickets_button(off, texts) == ()
    assert my_tickets_button(SHIPPED, texts)[0].data == STATUS_BUTTON
    event = CustomerMessage(
        channel="whatsapp",
        external_id="w1",
        conversation="whatsapp:1",
        sender=Sender(external_id="1"),
        chat_id="1",
        platform_message_id="w1",
        text="#12",
    )
    assert status_request_of(event, off) is None
    assert status_request_of(event, SHIPPED) == StatusRequest(12)


def test_a_button_title_longer_than_whatsapp_allows_is_refused() -> None:
    with pytest.raises(RulesError, match=r"texts\.languages\.en\.my_tickets"):
        parse_rules({"version": 1, "texts": {"languages": {"en": {**EN, "my_tickets": "x" * 21}}}})


EN = {
    "welcome": "w",
    "ack": "#{ticket}",
    "resolved": "r",
    "rating_thanks": "{rating}",
    "reopened": "o",
}


async def test_the_limit_lives_in_the_database_and_its_window_slides(engine: AsyncEngine) -> None:
    """Two dispatchers (two processes) share one count; after the window it starts over."""
    rules = SHIPPED.model_copy(
        update={
            "status_lookup": SHIPPED.status_lookup.model_copy(
                update={"max_lookups": 2, "window_minutes": 10}
            )
        }
    )
    first, second = make_harness(engine, rules), make_harness(engine, rules)
    for n, harness in enumerate((first, second, first), start=1):
        await harness.inbox.accept([first.customer(f"#{n}", chat="9")], {})
        await harness.settle()
    answers = [m.text for m in first.telegram.sent + second.telegram.sent]
    assert sorted(answers) == sorted(
        [
            'We found no ticket #1 of yours. Send "status" to list your tickets.',
            'We found no ticket #2 of yours. Send "status" to list your tickets.',
            "You have looked up many tickets just now. Please try again in a few minutes.",
        ]
    )
    first.clock.advance(minutes=10, seconds=1)
    await first.inbox.accept([first.customer("#4", chat="9")], {})
    await first.settle()
    assert first.telegram.sent[-1].text.startswith("We found no ticket #4 of yours.")


# The shipped rules.yaml's languages: what the detector may name on the desk.
SPOKEN = load_rules(Path(__file__).parents[1] / "rules.yaml").spoken_languages()


def test_the_desk_detects_among_the_languages_it_speaks() -> None:
    assert sorted(SPOKEN) == ["en", "es", "ru", "zh"]
    assert SPOKEN == SHIPPED_DESK_LANGUAGES  # what `deskbot nlp eval` measures among
    also = parse_rules({"version": 1, "texts": {"also_detect": ["FR"]}}).spoken_languages()
    assert "fr" in also


@pytest.mark.parametrize(
    "text",
    [
        "I want a refund for my order",  # German 0.87 to the detector on its own
        "I want to return an item",  # Portuguese 0.77
        "here is a photo of the sofa colour I want",  # German 0.79
        "where is my order",  # German 0.77
        "I forgot my password and can't sign in, how do I reset it?",  # Italian 0.86
    ],
)
def test_english_requests_stay_english(text: str) -> None:
    assert detect_language(text) != "en"  # what the detector alone would have said
    assert detect_language(text, SPOKEN) == "en"


@pytest.mark.parametrize("text", ["hello", "hola", "thanks", "ok"])
def test_a_greeting_is_too_short_to_name_a_language(text: str) -> None:
    # "hello" was Spanish 0.74 of the desk's four languages: now nobody's.
    assert detect_language(text, SPOKEN) is None


@pytest.mark.parametrize(
    ("text", "allowed", "language"),
    [
        ("Где мой заказ?", SPOKEN, "ru"),  # short, but Cyrillic says it plainly
        ("我要退款", SPOKEN, "zh"),
        ("¿Dónde está mi pedido?", SPOKEN, "es"),
        ("Quiero un reembolso, por favor", SPOKEN, "es"),
        ("Bonjour, ma commande n'est pas arrivée", SPOKEN | {"fr"}, "fr"),
    ],
)
def test_other_languages_among_the_desks(
    text: str, allowed: frozenset[str], language: str | None
) -> None:
    assert detect_language(text, allowed) == language


def test_a_few_latin_words_keep_the_apps_language_unless_their_script_says_otherwise() -> None:
    assert choose_language("es", "en", "I want a refund") == "es"
    assert choose_language("en", "ru", "Где мой заказ?") == "ru"
    long = "I have been waiting for my parcel for two weeks now and nobody tells me anything"
    assert choose_language("es", "en", long) == "en"
    assert choose_language("", None, "hello") is None  # an empty tag is no hint


LONG_ES = "Hola, mi pedido no ha llegado todavía y necesito saber cuándo llegará, por favor"
LONG_EN = "Actually I would rather write in English, my parcel has not arrived in two weeks"


async def test_one_short_message_never_changes_a_customers_language(engine: AsyncEngine) -> None:
    h = make_harness(engine)
    await _say(h, LONG_ES)
    assert await _language(h) == "es"
    await _say(h, "I want a refund for my order")
    assert await _language(h) == "es"  # one short English message: still Spanish
    await _say(h, LONG_EN)
    assert await _language(h) == "en"  # a long one is evidence enough


async def test_several_agreeing_short_messages_change_it(engine: AsyncEngine) -> None:
    h = make_harness(engine)
    await _say(h, LONG_ES)
    await _say(h, "I want a refund for my order")
    await _say(h, "where is my order")
    assert await _language(h) == "es"  # two are not enough
    await _say(h, "I want to return an item")
    assert await _language(h) == "en"  # three in a row are
    await _say(h, "¿Dónde está mi pedido?")
    assert await _language(h) == "en"  # and one short Spanish one does not undo it


async def test_hello_from_a_customer_without_an_app_language_is_not_spanish(
    engine: AsyncEngine,
) -> None:
    h = make_harness(engine)
    await _say(h, "hello")
    assert await _language(h) is None  # nothing known: the default language answers
    assert h.telegram.sent[0].text.startswith("Thanks")  # the English acknowledgement
    await _say(h, "hello there, my order has not arrived yet and I need it urgently")
    assert await _language(h) == "en"


async def _say(h: Harness, text: str) -> None:
    await h.inbox.accept([h.customer(text, chat="77", language=None)], {})
    await h.settle()


async def _language(h: Harness) -> str | None:
    async with h.sessions() as s:
        return await s.scalar(select(Customer.language))
