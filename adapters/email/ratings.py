"""Ratings by email: the rating request carries five links to the desk,
``{DESK_PUBLIC_URL}/rate/<token>/<1-5>``.

The token names the ticket and the rating prompt of this resolve, signed with a key only the
desk has (derived from the mailbox's credentials), so it cannot be guessed or moved to another
ticket, and a newer resolve's prompt makes it stale (the core's rating rules). Opening a link
shows a small page with one button: mail scanners that open every link (Outlook's Safe Links
and the like) must not rate for the customer, so only the press of the button (a POST) counts,
and only the first press for a prompt is taken (the inbox dedupes on ticket and prompt).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import logging
from typing import NamedTuple

from aiohttp import web

from bot.base.settings import EmailSettings
from bot.delivery.inbox import Inbox
from bot.domain.customer_requests import parse_rating, rating_data
from bot.domain.events import CustomerButton, Sender
from bot.domain.mail import address_of, conversation_of
from bot.domain.outbound import Button
from bot.mail.store import MailStore

log = logging.getLogger("deskbot.adapters.email")

ROUTE = "/rate/{token}/{rating}"


class Signed(NamedTuple):
    ticket_id: int
    prompt_id: int


def link_key(settings: EmailSettings) -> bytes:
    """The signing key: the same on every desk of one mailbox, secret as its passwords are
    (changing a password makes the rating links already sent stale)."""
    material = "\0".join(
        ("deskbot-rating-links", settings.address, settings.imap.password, settings.smtp.password)
    )
    return hashlib.sha256(material.encode()).digest()


def sign(key: bytes, ticket_id: int, prompt_id: int) -> str:
    body = f"{ticket_id}.{prompt_id}"
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()[:18]
    return f"{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def verify(key: bytes, token: str) -> Signed | None:
    ticket, _, rest = token.partition(".")
    prompt, _, _mac = rest.partition(".")
    if not (ticket.isascii() and ticket.isdigit() and prompt.isascii() and prompt.isdigit()):
        return None
    if len(ticket) > 12 or len(prompt) > 15:
        return None
    expected = sign(key, int(ticket), int(prompt))
    if not hmac.compare_digest(expected.encode(), token.encode()):
        return None
    return Signed(int(ticket), int(prompt))


def rating_links(
    key: bytes, public_url: str | None, buttons: tuple[Button, ...]
) -> list[tuple[str, str]]:
    """The rating buttons of a message as (label, link); other buttons have no mail form."""
    if not public_url:
        return []
    links: list[tuple[str, str]] = []
    for button in buttons:
        tap = parse_rating(button.data)
        if tap is None or tap.prompt_id is None:
            continue
        token = sign(key, tap.ticket_id, tap.prompt_id)
        links.append((button.text, f"{public_url}/rate/{token}/{tap.rating}"))
    return links


def _page(title: str, body: str, status: int = 200) -> web.Response:
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title></head>"
        "<body style='font-family:sans-serif;max-width:32em;margin:3em auto;text-align:center'>"
        f"<h1 style='font-size:1.4em'>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=page, content_type="text/html", status=status)


class RatingPages:
    def __init__(self, settings: EmailSettings, inbox: Inbox, store: MailStore) -> None:
        self._key = link_key(settings)
        self._inbox = inbox
        self._store = store

    def _read(self, request: web.Request) -> tuple[Signed, int] | None:
        signed = verify(self._key, request.match_info["token"])
        raw = request.match_info["rating"]
        if signed is None or raw not in ("1", "2", "3", "4", "5"):
            return None
        return signed, int(raw)

    async def show(self, request: web.Request) -> web.StreamResponse:
        found = self._read(request)
        if found is None:
            return _page("This link is not valid", "<p>Please use the link in our mail.</p>", 404)
        signed, rating = found
        stars = "★" * rating + "☆" * (5 - rating)
        form = (
            f"<p style='font-size:2em'>{stars}</p>"
            "<form method='post'><button type='submit' style='font-size:1.2em;padding:.5em 1.5em'>"
            f"Send my rating: {rating}/5</button></form>"
        )
        return _page(f"Rate ticket #{signed.ticket_id}", form)

    async def rate(self, request: web.Request) -> web.StreamResponse:
        found = self._read(request)
        if found is None:
            return _page("This link is not valid", "<p>Please use the link in our mail.</p>", 404)
        signed, rating = found
        try:
            state = await self._store.rating_state(signed.ticket_id)
        except Exception:
            log.exception("email.rating_failed ticket=%d", signed.ticket_id)
            return _page("Please try again", "<p>We could not record it just now.</p>", 503)
        if state is None:
            return _page("This link is not valid", "<p>Please use the link in our mail.</p>", 404)
        chat_id, already = state
        if already is not None:
            return _page("Thank you", f"<p>You already rated ticket #{signed.ticket_id}.</p>")
        address = address_of(chat_id)
        event = CustomerButton(
            channel="email",
            # One rating per prompt: a second press (of any number) is dropped by the inbox.
            external_id=f"rate:{signed.ticket_id}:{signed.prompt_id}",
            conversation=conversation_of(address),
            sender=Sender(external_id=address),
            chat_id=chat_id,
            data=rating_data(signed.ticket_id, signed.prompt_id, rating),
            title=f"{rating}/5",
        )
        try:
            await self._inbox.accept([event], {"rating_link": signed.ticket_id, "rating": rating})
        except Exception:
            log.exception("email.rating_failed ticket=%d", signed.ticket_id)
            return _page("Please try again", "<p>We could not record it just now.</p>", 503)
        log.info("email.rating_link ticket=%d", signed.ticket_id)
        return _page("Thank you!", f"<p>You rated ticket #{signed.ticket_id} {rating}/5.</p>")
