"""Macros in rules.yaml: validated with errors that name the field, filled in the customer's
language, and the Reply modal within Slack's limits."""

from __future__ import annotations

import re

import pytest

from bot.core.agent_side import is_note_text
from bot.domain.macros import Macro, fill
from bot.domain.rules import RulesError, parse_rules

from .e2e.conftest import RULES


def _rules(*macros: dict[str, object], tags: list[str] | None = None) -> object:
    return parse_rules({"version": 1, "tags": tags or [], "macros": list(macros)})


@pytest.mark.parametrize(
    ("macro", "error"),
    [
        (
            {"name": "a", "text": {"en": "Hi {name}"}},
            "macros.0.text: Value error, en: unknown placeholder {name}",
        ),
        ({"name": "a", "text": {"en": "Hi {"}}, "macros.0.text: Value error, en: Single '{'"),
        ({"name": "a", "text": {}}, "macros.0.text"),
        ({"name": "a", "text": {"en": "  "}}, "en: the text is empty"),
        ({"name": "", "text": {"en": "x"}}, "macros.0.name"),
        (
            {"name": "a", "text": {"en": "x"}, "actions": {"status": "closed"}},
            "macros.0.actions.status",
        ),
        ({"name": "a", "text": {"en": "x"}, "reply": 1}, "macros.0.reply: Extra inputs"),
        (
            {"name": "a", "text": {"en": "x"}, "actions": {"add_tags": ["zz"]}},
            "macros.0.actions.add_tags: unknown tag 'zz'",
        ),
    ],
)
def test_a_wrong_macro_is_named_at_start_up(macro: dict[str, object], error: str) -> None:
    with pytest.raises(RulesError) as caught:
        _rules(macro)
    assert error in str(caught.value)


def test_macro_names_are_unique_and_one_menu_holds_them_all() -> None:
    with pytest.raises(RulesError, match=re.escape("macros.1.name: 'a' is used by another macro")):
        _rules({"name": "a", "text": {"en": "x"}}, {"name": "a", "text": {"en": "y"}})
    many: list[dict[str, object]] = [{"name": f"m{n}", "text": {"en": "x"}} for n in range(101)]
    with pytest.raises(RulesError, match="macros"):
        _rules(*many)


def test_the_customers_language_then_the_default_then_english() -> None:
    macro = Macro(
        name="m", text={"EN": "Hi {customer_name}, #{ticket}. {agent_name}", "es": "Hola"}
    )
    assert macro.text_for("es-MX") == "Hola"
    assert (
        macro.text_for("de")
        == macro.text_for(None)
        == "Hi {customer_name}, #{ticket}. {agent_name}"
    )
    values = {"customer_name": "Ann {ticket}", "ticket": "7", "agent_name": "Bob"}
    # A customer's name with braces in it is text, not a placeholder.
    assert fill(macro.text_for("en"), values) == "Hi Ann {ticket}, #7. Bob"
    assert [m.name for m in RULES.macros] == ["Refund on its way", "Need order number"]


@pytest.mark.parametrize(
    "text",
    [
        "note: x",
        "  NOTE: x",
        '"note: x"',
        "“// x”",
        "&gt; note: x",
        "> (note) x",
        "*note:* x",
        "\n\t// x",
    ],
)
def test_a_note_however_it_starts(text: str) -> None:
    assert is_note_text(text, RULES.slack.note_prefixes)


@pytest.mark.parametrize("text", ["Hello, note: this", "I'll note: it", "https://x//y", ""])
def test_a_reply_that_mentions_a_prefix_is_a_reply(text: str) -> None:
    assert not is_note_text(text, RULES.slack.note_prefixes)
