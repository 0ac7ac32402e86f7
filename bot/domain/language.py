"""The language to answer a customer in: pure, no I/O."""

from __future__ import annotations

import re


def primary(tag: str | None) -> str | None:
    """ "zh-hans" → "zh"; None stays None."""
    return tag.lower().split("-")[0] if tag else None


# Fewer letters than this is a short message: the platform's hint (the language of the
# customer's app) is trusted over what the detector made of a few words, and one such message
# never changes the language the desk keeps for the customer.
SHORT_LETTERS = 40

_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
# Languages whose script alone tells them from the Latin-script ones.
_SCRIPT = {
    "ru": re.compile(r"[\u0400-\u04ff]"),
    "zh": re.compile(r"[\u4e00-\u9fff]"),
    "ja": re.compile(r"[\u3040-\u30ff]"),
    "ko": re.compile(r"[\uac00-\ud7af]"),
    "ar": re.compile(r"[\u0600-\u06ff]"),
    "hi": re.compile(r"[\u0900-\u097f]"),
}


def letters(text: str) -> int:
    """How many letters ``text`` has (digits, punctuation and emoji say nothing of a language)."""
    return len(_LETTER.findall(text))


def choose_language(hint: str | None, detected: str | None, text: str | None = None) -> str | None:
    """The language to answer a message in, or None when neither source says anything.

    The platform's hint wins while the text agrees with it (it may be more precise, "zh-hans");
    a confident detection wins when there is no hint (WhatsApp) or when it disagrees: Telegram's
    hint is the language of the customer's app, not of what they write. ``detect_language``
    already declines short or ambiguous text, so "ok" or "thanks" never overrides anything.
    """
    if detected is None:
        return hint
    if hint is not None and primary(hint) == detected:
        return hint
    # A few words in a Latin script (English or German?): the app's language is the better
    # guess. Another script (Cyrillic, Han) says it plainly, however short.
    own_script = _SCRIPT.get(detected)
    says_plainly = own_script is not None and text is not None and own_script.search(text)
    if hint is not None and text is not None and not confident(text) and not says_plainly:
        return hint
    return detected


def confident(text: str) -> bool:
    """Is ``text`` long enough to change the language the desk keeps for a customer?"""
    return letters(text) >= SHORT_LETTERS
