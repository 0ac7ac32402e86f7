"""The adapters' one way into the desk, and what may be stored through it."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bot.domain.events import Event


class Inbox(Protocol):
    """Durable, deduplicated intake.

    ``accept`` commits the events before it returns, so an adapter acknowledges the platform
    only after the events are safe. Events whose ``(channel, external_id)`` was seen before are
    dropped. Returns how many were new. ``raw`` is the platform payload, kept for audit.
    ``accept_each`` does the same for events that came each with a payload of its own (the
    updates of one Telegram poll), in one transaction; ``accept`` is for a platform waiting for
    its answer (a webhook), ``accept_each`` for a poll, which waits for nobody.
    """

    async def accept(self, events: Sequence[Event], raw: Mapping[str, Any]) -> int: ...

    async def accept_each(self, items: Sequence[tuple[Event, Mapping[str, Any]]]) -> int: ...


# Real platform payloads nest a handful of levels; anything far deeper is hostile, and would
# only exhaust the recursion of whatever walks it next (serialisers, the ORM, the dispatcher).
MAX_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


class Unstorable(ValueError):
    """A payload the desk will not store: nested too deeply, or not JSON at all."""


def storable(value: Any, depth: int = 0) -> Any:
    """``value`` as both databases will store it, or :class:`Unstorable`.

    PostgreSQL refuses NUL in text and JSON and cannot encode a lone surrogate as UTF-8
    (``json.loads`` gives both from ``\\u0000`` and ``\\ud800``): NULs are dropped and lone
    surrogates become U+FFFD. NaN and the infinities are not JSON: they become null. Integers
    are kept whatever their size (JSON has no limit); code that needs an int64 checks its own.
    """
    if depth > MAX_DEPTH:
        raise Unstorable(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {storable(str(k), depth + 1): storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v, depth + 1) for v in value]
    return value


def fitted(value: str, size: int = 200) -> str:
    """A key column's value within its ``size`` (PostgreSQL refuses longer; SQLite would
    not): a longer one keeps its start and a digest of the whole, so it stays unique."""
    if len(value) <= size:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:40]
    return f"{value[: size - 41]}~{digest}"


# The longest a field of an event may be where it lands in a column of the same size (see
# storage/models.py); real platform ids are far shorter. Longer is not a real id: the event is
# kept as ``ignored`` with the reason, rather than failing in the dispatcher five times.
FIELD_LIMITS = {
    "chat_id": 100,
    "external_id": 100,  # the sender's: Identity.external_id
    "platform_message_id": 200,
    "tapped_message_id": 200,
    "callback_query_id": 200,
    "username": 100,
    "user_name": 100,
    "user_id": 40,
    "slack_channel": 40,
    "ts": 40,
    "thread_ts": 40,
    "message_ts": 40,
    "phone": 40,
    "language": 20,
}
CLIPPED = {"name": 200}  # a display name is clipped, not refused
INT64 = 2**63


def unfit(payload: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``payload`` (an event as JSON) with display names clipped, and why the event cannot be
    processed (a field longer than its column, an integer beyond int64), or None."""

    def walk(value: Any, key: str, top: bool) -> tuple[Any, str | None]:
        """``top``: ``value`` is a field of the event itself, not of something inside it."""
        if isinstance(value, dict):
            fixed: dict[str, Any] = {}
            for k, v in value.items():
                fixed[k], why = walk(v, k, value is payload)
                if why:
                    return value, why
            return fixed, None
        if isinstance(value, list):
            for v in value:
                if (why := walk(v, key, False)[1]) is not None:
                    return value, why
            return value, None
        if isinstance(value, bool):
            return value, None
        if isinstance(value, int) and not -INT64 <= value < INT64:
            return value, f"{key} is beyond a 64-bit integer"
        if isinstance(value, str):
            if key in CLIPPED and len(value) > CLIPPED[key]:
                return value[: CLIPPED[key]], None
            limit = FIELD_LIMITS.get(key)
            # The event's own external_id is the inbox's dedupe key, fitted to its column.
            if limit is not None and len(value) > limit and not (top and key == "external_id"):
                return value, f"{key} longer than {limit} characters"
        return value, None

    fixed, why = walk(payload, "", True)
    return (payload if why else fixed), why
