"""The lifecycle every platform adapter offers the desk."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from bot.domain.events import Channel
from bot.domain.outbound import Delivery, Outbound


class Adapter(Protocol):
    channel: Channel

    def install(self, app: web.Application) -> None:
        """Add this adapter's webhook routes to the desk's HTTP server."""

    async def start(self) -> None:
        """Connect: check credentials, begin long polling or register the webhook."""

    async def stop(self) -> None:
        """Stop taking new input and close client sessions."""

    @property
    def started(self) -> bool:
        """True once start() succeeded and until stop(); reported by /healthz."""

    async def send(self, message: Outbound) -> Delivery:
        """Deliver one message; raise a bot.domain.outbound.DeliveryError subclass on refusal."""
