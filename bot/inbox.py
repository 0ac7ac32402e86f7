"""The adapters' one way into the desk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bot.events import Event


class Inbox(Protocol):
    """Durable, deduplicated intake.

    ``accept`` commits the events before it returns, so an adapter acknowledges the platform
    only after the events are safe. Events whose ``(channel, external_id)`` was seen before are
    dropped. Returns how many were new. ``raw`` is the platform payload, kept for audit.
    """

    async def accept(self, events: Sequence[Event], raw: Mapping[str, Any]) -> int: ...
