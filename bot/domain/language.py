"""The language to answer a customer in, and the one the desk keeps for them: pure, no I/O."""

from __future__ import annotations

from collections.abc import Sequence

from nlp.language import OWN_SCRIPT, letters

# A message of this many letters or more is evidence enough to change the language the desk
# keeps for a customer on its own; shorter ones need ``AGREEING`` in a row. Under it, the
# platform's hint (the language of the customer's app) is trusted over what the detector made
# of a few Latin-script words. On the train splits of ``python -m bench.language --desk`` (the
# desk's four languages, detection among them) messages of 40 letters or more were named
# wrongly 0 times in 4204, 30-39 letters 0 in 1773, 20-29 letters 5 in 1709 and under 20
# letters 7 in 2153; 40 keeps a margin, since a wrong change outlives the message.
LONG_LETTERS = 40
# This many consecutive messages detected in the same language change the kept language even
# when each is short: at under 2 % wrong each for short English, three wrong in a row (and in
# the same language) is rare, while a customer who has switched language says so quickly.
AGREEING = 3


def primary(tag: str | None) -> str | None:
    """ "zh-hans" → "zh"; None stays None."""
    return tag.lower().split("-")[0] if tag else None


def choose_language(hint: str | None, detected: str | None, text: str | None = None) -> str | None:
    """The language to answer a message in, or None when neither source says anything.

    The platform's hint wins while the text agrees with it (it may be more precise, "zh-hans");
    a confident detection wins when there is no hint (WhatsApp) or when it disagrees: Telegram's
    hint is the language of the customer's app, not of what they write. ``detect_language``
    already declines short or ambiguous text, so "ok" or "thanks" never overrides anything. With
    ``text``, a short message in a Latin script keeps the hint ("I want a refund" from a Spanish
    phone is not enough to answer in English); Cyrillic or Han text says its language plainly.
    """
    hint = hint or None  # an empty tag says nothing
    if detected is None:
        return hint
    if hint is not None and primary(hint) == detected:
        return hint
    short = text is not None and not long_enough(text)
    if hint is not None and short and detected not in OWN_SCRIPT:
        return hint
    return detected


def long_enough(text: str) -> bool:
    """Is ``text`` long enough to change the language kept for a customer on its own?"""
    return letters(text) >= LONG_LETTERS


def language_to_keep(
    kept: str | None,
    hint: str | None,
    detected: str | None,
    text: str,
    earlier: Sequence[str | None] = (),
) -> str | None:
    """The language the desk should keep for a customer after this message, or None to leave
    what it has (``kept``) alone.

    ``detected``: this message's detected language; ``earlier``: the detected languages of the
    customer's previous messages with text, newest first. A customer the desk knows no language
    for gets the one this message is answered in. A kept language changes only on evidence: a
    message of ``LONG_LETTERS`` letters, or ``AGREEING`` consecutive messages in the same other
    language; never on one short message ("I want a refund for my order").
    """
    hint = hint or None
    if not kept:
        return choose_language(hint, detected, text)
    if detected is None or primary(kept) == detected:
        return None
    agreeing = len(earlier) >= AGREEING - 1 and all(e == detected for e in earlier[: AGREEING - 1])
    if not long_enough(text) and not agreeing:
        return None
    return hint if primary(hint) == detected else detected
