"""The language to answer a customer in: pure, no I/O."""

from __future__ import annotations


def primary(tag: str | None) -> str | None:
    """ "zh-hans" → "zh"; None stays None."""
    return tag.lower().split("-")[0] if tag else None


def choose_language(hint: str | None, detected: str | None) -> str | None:
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
    return detected
