"""Block Kit as plain dictionaries, with the limits Slack sets (and slack_sdk's models check).

The ticket card is drawn for every new ticket and every change of one: slack_sdk's block
objects cost about a millisecond a card (building the objects, then ``to_dict`` validating
each of them through decorators), a fifth of a new ticket's CPU. These builders make the same
dictionaries directly (``tests/test_card_dicts.py`` parses every card back with slack_sdk and
checks that it makes the very same dictionary), and :func:`checked` walks a message's blocks
once for the limits that can bite a card: text lengths, element and option counts, ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Json = dict[str, Any]

# The limits, as Block Kit documents them (and slack_sdk's models enforce).
SECTION_TEXT = 3000
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
ID_LENGTH = 255  # block_id, action_id
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
PLACEHOLDER = 150
OPTIONS = 100
OPTION_TEXT = 75
OPTION_VALUE = 150


class BlockKitError(ValueError):
    """A block over one of Slack's limits (slack_sdk raised SlackObjectFormationError here)."""


def plain(text: str) -> Json:
    return {"type": "plain_text", "text": text, "emoji": True}


def mrkdwn(text: str) -> Json:
    return {"type": "mrkdwn", "text": text}


def option(text: str, value: str) -> Json:
    return {"text": plain(text), "value": value}


def section(block_id: str, text: str) -> Json:
    return {"type": "section", "block_id": block_id, "text": mrkdwn(text)}


def context(block_id: str, texts: Iterable[str]) -> Json:
    return {"type": "context", "block_id": block_id, "elements": [mrkdwn(t) for t in texts]}


def actions(block_id: str, elements: Sequence[Json]) -> Json:
    return {"type": "actions", "block_id": block_id, "elements": list(elements)}


def button(text: str, action_id: str, value: str, style: str | None = None) -> Json:
    b: Json = {"type": "button", "text": plain(text), "action_id": action_id, "value": value}
    if style is not None:
        b["style"] = style
    return b


def static_select(
    placeholder: str, action_id: str, options: Sequence[Json], initial: Json | None = None
) -> Json:
    s: Json = {
        "type": "static_select",
        "placeholder": plain(placeholder),
        "action_id": action_id,
        "options": list(options),
    }
    if initial is not None:
        s["initial_option"] = initial
    return s


def multi_static_select(
    placeholder: str, action_id: str, options: Sequence[Json], initial: Sequence[Json] = ()
) -> Json:
    s: Json = {
        "type": "multi_static_select",
        "placeholder": plain(placeholder),
        "action_id": action_id,
        "options": list(options),
    }
    if initial:
        s["initial_options"] = list(initial)
    return s


def users_select(placeholder: str, action_id: str, initial_user: str | None = None) -> Json:
    s: Json = {"type": "users_select", "placeholder": plain(placeholder), "action_id": action_id}
    if initial_user is not None:
        s["initial_user"] = initial_user
    return s


# -- the limits ------------------------------------------------------------------------------


def _at_most(value: str | None, limit: int, what: str) -> None:
    if value is not None and len(value) > limit:
        raise BlockKitError(f"{what} cannot exceed {limit} characters ({len(value)})")


def _options(options: Sequence[Json], where: str) -> None:
    if len(options) > OPTIONS:
        raise BlockKitError(f"{where}: options cannot exceed {OPTIONS} elements")
    for o in options:
        _at_most(o["text"]["text"], OPTION_TEXT, f"{where}: an option's text")
        _at_most(o["value"], OPTION_VALUE, f"{where}: an option's value")


def _element(e: Json) -> None:
    where = str(e.get("action_id", e["type"]))
    _at_most(e.get("action_id"), ID_LENGTH, "action_id")
    if "placeholder" in e:
        _at_most(e["placeholder"]["text"], PLACEHOLDER, f"{where}: placeholder")
    if e["type"] == "button":
        _at_most(e["text"]["text"], BUTTON_TEXT, f"{where}: a button's text")
        _at_most(e.get("value"), BUTTON_VALUE, f"{where}: a button's value")
    if "options" in e:
        _options(e["options"], where)


def checked(blocks: list[Json]) -> list[Json]:
    """``blocks``, or :class:`BlockKitError` naming the first limit one of them is over."""
    for b in blocks:
        _at_most(b.get("block_id"), ID_LENGTH, "block_id")
        kind = b["type"]
        if kind == "section":
            _at_most(b["text"]["text"], SECTION_TEXT, "a section's text")
        elif kind == "context" and len(b["elements"]) > CONTEXT_ELEMENTS:
            raise BlockKitError(f"a context cannot exceed {CONTEXT_ELEMENTS} elements")
        elif kind == "actions":
            if len(b["elements"]) > ACTIONS_ELEMENTS:
                raise BlockKitError(f"an actions block cannot exceed {ACTIONS_ELEMENTS} elements")
            for e in b["elements"]:
                _element(e)
    return blocks
