"""A ticket whose Slack card is gone gets a new card, so no ticket is ever invisible.

A card can disappear under the desk: someone deletes it (its thread goes with it), the channel
is archived, or the desk now talks to another workspace. Slack then answers the ticket's next
thread message with ``thread_not_found`` and its next card update with ``message_not_found``
(``channel_not_found``, ``is_archived`` or ``is_inactive`` when the channel is the problem).
Left alone, the customer would be told an agent is coming while no agent can see the ticket.

Instead the outbox, while it holds the ticket's head row (so nothing else of this ticket is
being sent), posts the card again as it is now, puts a summary of the conversation so far in
its thread, points the ticket at the new card, records a ``card`` event in the ticket's history,
and then delivers the message that failed into the new thread. Everything queued after it
follows there, in order. When the channel itself is gone the card moves to the rules' default
channel; if that is the channel that is gone, there is nowhere to put it: the row fails and the
desk logs an ERROR, because a person has to act.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.core.tickets import Desks
from bot.domain.mrkdwn import conversation_summary
from bot.domain.outbound import (
    BadRequest,
    ChannelSender,
    Delivery,
    DeliveryError,
    Outbound,
    RetryAfter,
    Unavailable,
)
from bot.workspace.card_view import card_view
from bot.workspace.cards import card_blocks, card_text
from storage.models import Customer, Message, OutboxRow, Ticket

log = logging.getLogger("deskbot.recovery")

CARD_GONE = frozenset({"thread_not_found", "message_not_found"})
# chat.postMessage says is_archived; chat.update says is_inactive for an archived channel.
CHANNEL_GONE = frozenset({"channel_not_found", "is_archived", "is_inactive"})
RECOVERABLE_KINDS = ("slack_card", "slack_thread", "slack_card_update")


def card_is_gone(out: Outbound, error: DeliveryError) -> bool:
    """Did Slack refuse ``out`` because the ticket's card, its thread or its channel is gone?"""
    return (
        out.channel == "slack"
        and out.ticket_id is not None
        and out.kind in RECOVERABLE_KINDS
        and isinstance(error, BadRequest)
        and error.detail in CARD_GONE | CHANNEL_GONE
    )


class CardRecovery:
    """Re-posts a ticket's card and thread; used by the outbox on a ``card_is_gone`` refusal."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        slack: ChannelSender,
        desks: Desks,
        clock: Clock,
        pace: Callable[[Outbound], Awaitable[None]],
    ) -> None:
        self._sessions = sessions
        self._slack = slack
        self._desks = desks
        self._rules = desks.rules
        self._clock = clock
        self._pace = pace  # waits for the desk's own Slack rate limit

    def is_gone(self, out: Outbound, error: DeliveryError) -> bool:
        return card_is_gone(out, error)

    async def recover(self, row_id: int, out: Outbound, error: DeliveryError) -> Delivery:
        """Deliver ``out`` (the outbox row ``row_id``) after re-posting its ticket's card.

        Raises a :class:`DeliveryError` like a sender does: the outbox retries or fails the row.
        """
        assert out.ticket_id is not None
        why = error.detail
        channel = out.destination
        if why in CHANNEL_GONE:
            # The default team's channel; without teams that is slack.channel.
            fallback = self._rules.team(self._rules.default_team).channel
            if fallback == channel:
                log.error(
                    "outbox.card_lost ticket=%d channel=%s error=%s: the default channel is "
                    "gone, so the ticket has no card; unarchive it or change the first team's "
                    "channel",
                    out.ticket_id,
                    channel,
                    why,
                )
                raise BadRequest(
                    f"{why}: the ticket's card cannot be re-posted, {channel} is the default "
                    "channel (the first team's) and it is gone"
                )
            why = f"{why} in <#{channel}>"
            channel = fallback
        card, summary_for = await self._card(out.ticket_id, row_id, channel, why)
        await self._pace(card)
        try:
            posted = await self._slack.send(card)
        except BadRequest as exc:
            if exc.detail in CHANNEL_GONE:
                log.error(
                    "outbox.card_lost ticket=%d channel=%s error=%s: the card could not be "
                    "re-posted either",
                    out.ticket_id,
                    channel,
                    exc.detail,
                )
            raise
        new_ts = posted.platform_message_id
        if not new_ts:
            raise Unavailable("Slack accepted the card but returned no ts")
        await self._record(out.ticket_id, channel, new_ts, error.detail, why)
        await self._post_summary(
            Outbound(
                channel="slack",
                kind="slack_thread",
                destination=channel,
                ticket_id=out.ticket_id,
                reply_to=new_ts,
                text=summary_for,
            )
        )
        match out.kind:
            case "slack_card":
                return posted  # the row was the card itself: this is its delivery
            case "slack_card_update":
                # The new card was built from the ticket as it is now, which includes this update.
                return Delivery(platform_message_id=new_ts)
            case _:
                moved = out.model_copy(update={"destination": channel, "reply_to": new_ts})
                await self._pace(moved)
                return await self._slack.send(moved)

    async def _card(
        self, ticket_id: int, row_id: int, channel: str, why: str
    ) -> tuple[Outbound, str]:
        """The card as it is now, and the summary of what was said before the failed row."""
        now = self._clock.now()
        async with self._sessions() as s:
            ticket = await s.get_one(Ticket, ticket_id)
            row = await s.get_one(OutboxRow, row_id)
            customer = await s.get_one(Customer, ticket.customer_id)
            view = await card_view(s, self._rules, now, ticket)
            messages = (
                await s.scalars(
                    select(Message).where(Message.ticket_id == ticket_id).order_by(Message.id)
                )
            ).all()
        # A customer message from the failed row's step or later is posted by its own queued
        # row, right after the summary: leave it out here so it does not show twice.
        said = [m for m in messages if not (m.direction == "in" and m.created_at >= row.created_at)]
        card = Outbound(
            channel="slack",
            kind="slack_card",
            destination=channel,
            ticket_id=ticket_id,
            text=card_text(view),
            blocks=tuple(card_blocks(view)),
        )
        head = (
            f"📋 This ticket's card was gone ({why}), so the desk posted it again"
            f" at {now.strftime('%d %b %H:%M')} UTC."
        )
        return card, conversation_summary(customer.name, said, head=head)

    async def _record(self, ticket_id: int, channel: str, ts: str, error: str, why: str) -> None:
        """Point the ticket at its new card at once: a crash after this leaves no orphan card."""
        async with self._sessions.begin() as s:
            ticket = await s.get_one(Ticket, ticket_id, with_for_update=True)
            old = f"{ticket.slack_channel}/{ticket.slack_ts}"
            ticket.slack_channel = channel
            ticket.slack_ts = ts
            desk = self._desks(s, self._clock.now())
            desk.history(
                ticket, "card", "desk", old, f"{channel}/{ts}", f"card was gone ({why}); re-posted"
            )
        log.warning(
            "outbox.card_reposted ticket=%d error=%s channel=%s ts=%s",
            ticket_id,
            error,
            channel,
            ts,
        )

    async def _post_summary(self, summary: Outbound) -> None:
        """Best effort, a few tries: the card is what matters, and it is already there."""
        for attempt in range(1, 4):
            await self._pace(summary)
            try:
                await self._slack.send(summary)
                return
            except RetryAfter as exc:
                await asyncio.sleep(min(exc.seconds, 30.0))
            except Unavailable:
                await asyncio.sleep(0.5 * 2**attempt)
            except DeliveryError as exc:
                log.warning(
                    "outbox.summary_failed ticket=%s error=%s", summary.ticket_id, exc.detail
                )
                return
        log.warning("outbox.summary_failed ticket=%s error=gave up", summary.ticket_id)
