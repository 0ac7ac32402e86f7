"""Agents' Slack display names, from ``users.info``, cached for a while.

The desk shows agents to people by name: on cards, in thread lines, and to the customer
("Alice: your refund is on its way"), never as a Slack id. Names are read when an agent's
event arrives (the adapter adds it to the event before the inbox stores it), so the ticket
logic itself never waits on Slack. ``users.info`` is Tier 4 (100+ a minute); with the cache a
busy desk calls it about once per agent per TTL.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters._common import as_mapping, as_str

log = logging.getLogger("deskbot.adapters.slack")
USER_ID = re.compile(r"[UW][A-Z0-9]{1,20}")

NAME_TTL_SECONDS = 3600.0  # a renamed agent shows under the new name within the hour
FAILED_TTL_SECONDS = 60.0  # after a failed look-up, do not ask again for a minute
LOOKUP_TIMEOUT = 1.5  # Slack wants its 3-second ack; the name is not worth missing it


def display_name(user: object) -> str:
    """What Slack itself shows: the display name, else the full name, else the handle."""
    data = as_mapping(user)
    profile = as_mapping(data.get("profile"))
    for candidate in (
        profile.get("display_name"),
        profile.get("real_name"),
        data.get("real_name"),
        data.get("name"),
    ):
        name = " ".join(as_str(candidate).split())
        if name:
            return name[:80]
    return ""


class DisplayNames:
    """users.info with a TTL cache; a failure gives ``fallback`` and is retried later."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl: float = NAME_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}  # user → (expires, name or "")
        self._locks: dict[str, asyncio.Lock] = {}

    def cached(self, user_id: str) -> str | None:
        hit = self._cache.get(user_id)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        return None

    async def get(self, user_id: str, fallback: str = "") -> str:
        if not USER_ID.fullmatch(user_id):
            # Not a Slack user id (a forged or broken payload): nothing to ask Slack about, and
            # never an unbounded string in a request, nor a cache entry per junk value.
            return fallback
        hit = self.cached(user_id)
        if hit is not None:
            return hit or fallback
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:  # one look-up per user at a time, however many events arrive
            hit = self.cached(user_id)
            if hit is not None:
                return hit or fallback
            try:
                resp = await asyncio.wait_for(self._client.users_info(user=user_id), LOOKUP_TIMEOUT)
            except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("slack.users_info_failed user=%s error=%s", user_id, type(exc).__name__)
                self._cache[user_id] = (self._clock() + FAILED_TTL_SECONDS, "")
                return fallback
            name = display_name(resp.get("user"))
            self._cache[user_id] = (self._clock() + self._ttl, name)
            return name or fallback
