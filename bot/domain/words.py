"""Counted nouns in what the desk says in English: "1 ticket", "2 tickets", never "(s)"."""

from __future__ import annotations

# The nouns whose plural is not the singular plus "s".
_IRREGULAR = {"identity": "identities", "person": "people", "reply": "replies"}


def plural(noun: str, n: int) -> str:
    """``noun`` as it goes with the number ``n`` (its last word is the one that changes)."""
    if n == 1:
        return noun
    head, _, last = noun.rpartition(" ")
    many = _IRREGULAR.get(last, last + "s")
    return f"{head} {many}" if head else many


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun`` in agreement: ``counted(1, "identity")`` is "1 identity"."""
    return f"{n} {plural(noun, n)}"
