"""What customers ask of the desk with a word or a button, and the formats of those buttons.

- Status by ticket number: Telegram ``/status`` and ``/status 123``; on either channel a message
  that is only ``status 123``, ``#123`` or the localized word; the "My tickets" button.
- Rating taps: ``rate:<ticket>:<prompt>:<n>`` under the resolve message.

Pure: parsing and button data only (one module per format, each with its prefix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from bot.domain.events import CustomerMessage
from bot.domain.outbound import Button
from bot.domain.rules import Rules, Texts

# The "My tickets" button's data (Telegram callback_data / WhatsApp reply id).
STATUS_BUTTON = "status:mine"
# Ticket numbers are ids; twelve digits is far beyond any desk and keeps within BIGINT.
_NUMBER = r"#?\s*(\d{1,12})"
_COMMAND = re.compile(rf"/status(?:@\w+)?(?:\s+{_NUMBER})?", re.IGNORECASE)
_HASH = re.compile(r"#\s*(\d{1,12})")
_WORD = re.compile(rf"([^\W\d_]+)\s*[:：]?\s*(?:{_NUMBER})?\s*[.!?？。]?")


@dataclass(frozen=True, slots=True)
class StatusRequest:
    ticket: int | None  # None: list the customer's tickets
    language: str | None = None  # the language whose status word they used, if not English


def status_words(rules: Rules) -> dict[str, str | None]:
    """Each status word customers may write (casefolded) → the language it tells of. English
    "status" is always understood; it and the default language's word tell nothing (many
    languages write "status"), so those answers follow the customer's known language."""
    words: dict[str, str | None] = {"status": None}
    for language, texts in rules.texts.languages.items():
        told = None if language == rules.texts.default_language else language
        words.setdefault(texts.status_word.casefold(), told)
    return words


def parse_status_request(text: str, words: dict[str, str | None]) -> StatusRequest | None:
    """The lookup a message asks for, when the message is nothing but a lookup."""
    text = text.strip()
    if m := _COMMAND.fullmatch(text):
        return StatusRequest(int(m[1]) if m[1] else None)
    if m := _HASH.fullmatch(text):
        return StatusRequest(int(m[1]))
    if (m := _WORD.fullmatch(text)) is not None and m[1].casefold() in words:
        return StatusRequest(int(m[2]) if m[2] else None, words[m[1].casefold()])
    return None


def status_request_of(event: CustomerMessage, rules: Rules) -> StatusRequest | None:
    if not rules.status_lookup.enabled or event.attachments:
        return None
    return parse_status_request(event.text, status_words(rules))


def my_tickets_button(rules: Rules, texts: Texts) -> tuple[Button, ...]:
    """The button under the acknowledgement, when status lookups and the button are on."""
    if rules.status_lookup.enabled and rules.status_lookup.button:
        return (Button(text=texts.my_tickets, data=STATUS_BUTTON),)
    return ()


# -- linking identities -------------------------------------------------------------------

LINK_COMMANDS = frozenset({"/link", "link"})


def is_link_request(ev: CustomerMessage) -> bool:
    """A Telegram customer asks to link their WhatsApp number (``/link``)."""
    return ev.channel == "telegram" and ev.text.strip().lower() in LINK_COMMANDS


# -- ratings -----------------------------------------------------------------------------


class RatingTap(NamedTuple):
    ticket_id: int
    prompt_id: int | None  # None: the first button format, from before prompts were recorded
    rating: int


def rating_data(ticket_id: int, prompt_id: int, rating: int) -> str:
    """Button data naming the resolve it belongs to (its prompt); well under Telegram's 64 bytes."""
    return f"rate:{ticket_id}:{prompt_id}:{rating}"


def parse_rating(data: str) -> RatingTap | None:
    """``rate:<ticket>:<prompt>:<n>``, or ``rate:<ticket>:<n>`` on prompts sent before the
    desk recorded its prompts (still out there in customers' chats)."""
    parts = data.split(":")
    if parts[0] != "rate" or len(parts) not in (3, 4):
        return None
    if not all(p.isascii() and p.isdigit() for p in parts[1:]):
        return None
    numbers = [int(p) for p in parts[1:]]
    if len(numbers) == 2:
        return RatingTap(numbers[0], None, numbers[1])
    return RatingTap(numbers[0], numbers[1], numbers[2])
