"""The outbox side: deliver what the dispatcher queued, once, in order, within platform limits.

Per destination (a customer chat, a ticket's Slack thread) rows go out in order: only the head
row of a destination is claimed. A 429 waits out its retry-after; 5xx and timeouts back off
with jitter; a blocked customer (Forbidden) and a rejected message (BadRequest) are not
retried and are shown on the ticket's thread, so no agent believes a reply arrived that did not.

What is guaranteed:

* Nothing queued is silently lost: every row ends ``sent``, or ``failed``/``unknown`` with the
  reason in ``last_error`` (and, for a message to a customer, a line in the ticket's thread;
  for a Slack post with nowhere to go, an ERROR in the log).
* A ticket never goes invisible: when Slack says its card, thread or channel is gone, the card
  is posted again with a summary of the conversation, and the message that failed follows it
  into the new thread (:mod:`bot.workspace.recovery`).
* Each row is sent once, except in the one window no platform lets a client close: the process
  dies after the platform accepted a message and before the row is marked ``sent``. The next
  desk on the same host takes the dead process's leases over at once (:mod:`bot.delivery.leases`)
  and
  settles that row: a notice the desk wrote itself (acknowledgement, welcome, reopened, rating
  prompt or thanks) is *not* sent again (at most once: status ``unknown``, and the thread says
  the customer may not have got it); an agent's reply *is* sent again (at least once: losing an
  answer is worse, and the thread says it may arrive twice). A Slack post carries its row id
  in message metadata and is looked for in the channel or thread before it is posted again, so
  it reaches Slack once. A process on another host is taken over once its heartbeat is 5 s old.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.base.process import this_process
from bot.base.repeat import Streak, nap, pause
from bot.core.tickets import Desks
from bot.delivery.outcomes import Metrics as Metrics  # where callers have always found it
from bot.delivery.outcomes import Outcome, OutcomeRecorder
from bot.delivery.ratelimit import Limiter, SharedBuckets
from bot.delivery.ratelimit import RateLimits as RateLimits  # where callers have always found it
from bot.domain.files import PLATFORM, describe
from bot.domain.outbound import (
    BadRequest,
    ChannelSender,
    Delivery,
    DeliveryError,
    FileContent,
    Forbidden,
    NothingToSay,
    NotPosted,
    Outbound,
    RetryAfter,
    Unavailable,
    WindowClosed,
)
from bot.domain.window import is_closed
from storage.db import one_writer, problem
from storage.models import Identity, OutboxRow, Ticket
from storage.queues import outbox_claim, release_lost_claims

log = logging.getLogger("deskbot.outbox")


HELD_NOTE_AFTER = timedelta(seconds=10)
# Kinds that go to the ticket's card or under it: the card's channel and ts are filled in late.
# What goes to the customer's chat (not a tap's answer: a customer who taps can hear us).
TO_THE_CUSTOMER = ("text", "file", "template")
# What WhatsApp takes only within 24 hours of the customer's last message (bot/window).
FREE_FORM = ("text", "file")
ABOUT_THE_CARD = ("slack_thread", "slack_thread_file", "slack_card_update")


def held_back_note(card: Outbound, held: timedelta) -> Outbound:
    """A new card that waited for its turn (a burst on Slack's rate limit) says how long, so
    the agent knows how long the customer has been waiting already."""
    if held < HELD_NOTE_AFTER:
        return card
    seconds = int(held.total_seconds())
    waited = f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    note = {
        "type": "context",
        "block_id": "held_back",
        "elements": [
            {
                "type": "mrkdwn",
                "text": f"⏳ Posted {waited} after the customer wrote: many new tickets were"
                " waiting for Slack's posting limit (the most urgent go first).",
            }
        ],
    }
    return card.model_copy(update={"blocks": (*card.blocks, note)})


async def _at_once() -> None:
    return None


class Renderer(Protocol):
    """Draws a row when it is sent, from the database as it is then (a feature's; listed in
    ``bot/wiring.py``). May raise :class:`NothingToSay` (done, nothing sent) or
    :class:`NotPosted` (failed, with that reason)."""

    def wants(self, out: Outbound) -> bool: ...

    async def render(
        self, out: Outbound, row_id: int, sender: ChannelSender | None
    ) -> Outbound: ...


@dataclass(frozen=True)
class Renderers:
    """``before_pacing``: rows whose kind and place are decided when sent (an incident's card),
    drawn before the rate limits see them. ``before_send``: drawn with the sender that will
    send them, once the rate limits let them go (an App Home)."""

    before_pacing: Sequence[Renderer] = ()
    before_send: Sequence[Renderer] = ()


class Recovery(Protocol):
    """What the outbox does when Slack says a ticket's card is gone (``bot/workspace``)."""

    def is_gone(self, out: Outbound, error: DeliveryError) -> bool: ...

    async def recover(self, row_id: int, out: Outbound, error: DeliveryError) -> Delivery: ...


RecoveryFactory = Callable[[ChannelSender, Callable[[Outbound], Awaitable[None]]], Recovery]


class OutboxSender(OutcomeRecorder):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        senders: Mapping[str, ChannelSender],
        desks: Desks,
        clock: Clock,
        metrics: Metrics,
        *,
        renderers: Renderers,
        recovery: RecoveryFactory | None,
        limits: RateLimits | None = None,
        lease: timedelta = timedelta(seconds=60),
        batch_size: int = 32,
        max_attempts: int = 10,
        idle_poll: float = 0.5,
        owner: str | None = None,
        shared_limits: bool | None = None,
        turn: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._sessions = sessions
        # Waits while a webhook waits for SQLite's one writer (DbInbox.turn): acknowledgements
        # go first.
        self._turn = turn or _at_once
        self._senders = senders
        self._owner = owner or this_process()
        self._desks = desks
        self._rules = desks.rules
        self._renderers = renderers
        self._clock = clock
        self._metrics = metrics
        # Several processes share one database only on PostgreSQL: there the platforms' budgets
        # are kept in it, so the fleet together stays within them (bot/delivery/ratelimit.py).
        if shared_limits is None:
            shared_limits = sessions.kw["bind"].dialect.name == "postgresql"
        self._limiter = Limiter(
            limits or RateLimits(), SharedBuckets(sessions) if shared_limits else None
        )
        self._lease = lease
        self._batch = batch_size
        self._max_attempts = max_attempts
        self._idle_poll = idle_poll
        # When the rows this process put off (for a rate limit, a retry) are due, on the
        # monotonic clock: the loop wakes then rather than at its next poll, so a channel paced
        # at one post a second gets one a second, not one every 1.5.
        self._put_off: list[float] = []  # a heap
        # In the batch being delivered: rows the rate limits refused, per bucket, and the rows
        # to put back with their pauses (see _deliver).
        self._refused: dict[str, int] = {}
        self._put_back: list[tuple[int, int, float]] = []
        self.wakeup = asyncio.Event()
        self.sent = 0
        # Since when the loop has been failing, and why (shown by /healthz); None while it works.
        self.failing: tuple[datetime, str] | None = None
        # When the claim under way began; still set at the next run if that claim failed.
        self._claim_began: datetime | None = None
        # Sent, but the database could not record it (see _finish): recorded, not re-sent,
        # when the row comes back to this process.
        self._unrecorded: dict[int, Delivery] = {}
        # Outcomes waiting to be recorded together (see _recorded), on SQLite.
        self._one_writer = one_writer(sessions)
        self._to_record: list[Outcome] = []
        self._recording = asyncio.Lock()
        slack = senders.get("slack")
        self._recovery = (
            recovery(slack, self._pace) if slack is not None and recovery is not None else None
        )

    async def run(self, stop: asyncio.Event) -> None:
        failures = Streak()
        while not stop.is_set():
            try:
                done = await self.run_once()
                self.failing = None
                if failed := failures.ended():
                    log.info("outbox.loop_recovered failures=%d", failed)
            except Exception as exc:
                wait, loud = failures.failed()
                if loud:
                    log.exception("outbox.loop_error failures=%d", failures.count)
                if self.failing is None:
                    self.failing = (self._clock.now(), problem(exc))
                await pause(stop, wait)  # not woken by new work: it would fail the same way
                continue
            if done == 0:
                self.wakeup.clear()
                await nap(self.wakeup, stop, self._pause())

    async def drain(self, seconds: float) -> int:
        """At shutdown: keep delivering what is due for up to ``seconds``. Returns what is left."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if await self.run_once() == 0:
                break
        async with self._sessions() as session:
            rows = await session.scalars(
                select(OutboxRow.id).where(OutboxRow.status.in_(("pending", "sending")))
            )
            return len(rows.all())

    async def run_once(self) -> int:
        await self._turn()
        if self._claim_began is not None:
            # The last claim failed, and the database may have committed it while the link
            # was cut before the answer came back: rows leased to us that were never sent,
            # which held their destinations back for a whole lease. Pending again now.
            async with self._sessions.begin() as session:
                released = await release_lost_claims(
                    session,
                    OutboxRow,
                    self._owner,
                    self._claim_began + self._lease,
                )
            if released:
                log.warning("outbox.claims_released rows=%d", released)
        self._claim_began = self._clock.now()
        async with self._sessions.begin() as session:
            rows = await outbox_claim(
                session,
                now=self._clock.now(),
                lease=self._lease,
                limit=self._batch,
                owner=self._owner,
            )
            claims = [(r.id, r.attempts, r.payload, r.message_id, r.created_at) for r in rows]
            # What a thread message or card update needs: the card's ts, known once posted.
            cards: dict[int, tuple[str, str | None]] = {}
            ticket_ids = {r.ticket_id for r in rows if r.ticket_id is not None}
            if ticket_ids:
                for tid, ch, ts in (
                    await session.execute(
                        select(Ticket.id, Ticket.slack_channel, Ticket.slack_ts).where(
                            Ticket.id.in_(ticket_ids)
                        )
                    )
                ).all():
                    cards[tid] = (ch, ts)
            # Customers who blocked the bot, among those this batch would write to.
            chats = {
                (r.channel, str(r.payload.get("destination")))
                for r in rows
                if r.payload.get("kind") in TO_THE_CUSTOMER
            }
            # And WhatsApp customers whose 24-hour window is known to be closed.
            blocked: set[tuple[str, str]] = set()
            closed: set[tuple[str, str]] = set()
            if chats:
                found = await session.execute(
                    select(
                        Identity.channel,
                        Identity.chat_id,
                        Identity.blocked,
                        Identity.last_inbound_at,
                    ).where(
                        Identity.channel.in_({ch for ch, _ in chats}),
                        Identity.chat_id.in_({chat for _, chat in chats}),
                        or_(Identity.blocked.is_(True), Identity.channel == "whatsapp"),
                    )
                )
                now = self._clock.now()
                for ch, chat, is_blocked, last_inbound in found.all():
                    if (ch, chat) not in chats:
                        continue
                    if is_blocked:
                        blocked.add((ch, chat))
                    elif ch == "whatsapp" and is_closed(last_inbound, self._rules.whatsapp, now):
                        closed.add((ch, chat))
        self._claim_began = None  # committed, and we know what we hold
        if not claims:
            return 0
        self._refused, self._put_back = {}, []
        try:
            results = await asyncio.gather(
                *(
                    self._deliver(rid, att, payload, mid, cards, queued, blocked, closed)
                    for rid, att, payload, mid, queued in claims
                )
            )
        finally:
            if self._put_back:
                await self._put_off_paced(self._put_back)
        return sum(results)

    async def _put_off_paced(self, rows: list[tuple[int, int, float]]) -> None:
        """Rows the rate limits held back (id, attempt, seconds): pending again, due when
        their turn comes, without counting an attempt; one transaction for all of them."""
        await self._turn()
        now = self._clock.now()
        async with self._sessions.begin() as session:
            for row_id, attempt, seconds in rows:
                await session.execute(
                    update(OutboxRow)
                    .where(
                        OutboxRow.id == row_id,
                        OutboxRow.status == "sending",
                        OutboxRow.attempts == attempt,
                    )
                    .values(
                        status="pending",
                        lease_until=None,
                        next_attempt_at=now + timedelta(seconds=seconds),
                        attempts=OutboxRow.attempts - 1,
                    )
                )
        for _, _, seconds in rows:
            heapq.heappush(self._put_off, time.monotonic() + seconds)

    async def _deliver(
        self,
        row_id: int,
        attempt: int,
        payload: dict[str, Any],
        message_id: int | None,
        cards: dict[int, tuple[str, str | None]],
        queued: datetime | None = None,
        blocked: Set[tuple[str, str]] = frozenset(),
        closed: Set[tuple[str, str]] = frozenset(),
    ) -> int:
        out = Outbound.model_validate(payload)
        if row_id in self._unrecorded:
            await self._finish(row_id, attempt, out, message_id, delivery=self._unrecorded[row_id])
            return 1
        # What a row is and where it goes may be decided only now (an incident's card and lists,
        # drawn from the incident as it is now).
        drawn = await self._render(self._renderers.before_pacing, row_id, attempt, out, message_id)
        if drawn is None:
            return 1
        out = drawn
        if out.kind == "slack_card" and queued is not None:
            out = held_back_note(out, self._clock.now() - queued)
        slack_channel, card_ts = cards.get(out.ticket_id or -1, (None, None))
        # A thread message or card update without reply_to is about the ticket's card as it is
        # when sent; one with reply_to names an older card on purpose (a transfer freezes it).
        current_card = out.reply_to is None
        if out.kind in ABOUT_THE_CARD and slack_channel and current_card:
            # Where the card is now: it may have been re-posted elsewhere since this was queued.
            out = out.model_copy(update={"destination": slack_channel})
        if out.kind in ABOUT_THE_CARD and current_card:
            if card_ts is None:
                await self._finish(
                    row_id, attempt, out, message_id, error=BadRequest("the card was never posted")
                )
                return 1
            out = out.model_copy(update={"reply_to": card_ts})
        if out.kind in TO_THE_CUSTOMER and (out.channel, out.destination) in blocked:
            # Telegram would refuse it with 403: say so without a doomed request. The customer
            # unblocks by writing again (or Telegram says so), which clears the flag.
            refused = Forbidden("the customer has blocked the bot")
            await self._finish(row_id, attempt, out, message_id, error=refused)
            return 1
        if out.kind in FREE_FORM and (out.channel, out.destination) in closed:
            # WhatsApp would refuse it (131047): bot/window takes it from here, without a
            # request that can only fail.
            closing = WindowClosed(
                f"the customer last wrote more than {self._rules.whatsapp.window_hours:g} h ago"
            )
            await self._finish(row_id, attempt, out, message_id, error=closing)
            return 1
        wait = await self._limiter.reserve(out, slack_channel)
        if wait > 0:
            # Put back once the batch is done, all in one transaction; the rows of one channel
            # refused in this batch are spaced out at its rate instead of all coming back at
            # the same moment to be refused again.
            key, spacing = self._limiter.pacing(out, slack_channel)
            nth = self._refused.get(key, 0)
            self._refused[key] = nth + 1
            self._put_back.append((row_id, attempt, wait + nth * spacing))
            return 0
        sender = self._senders.get(out.channel)
        if sender is None:
            await self._finish(
                row_id,
                attempt,
                out,
                message_id,
                error=BadRequest(f"{out.channel} is not configured"),
            )
            return 1
        if out.channel in ("slack", "email"):  # email: the row's id seeds its Message-ID
            out = out.model_copy(update={"outbox_id": row_id})
        drawn = await self._render(
            self._renderers.before_send, row_id, attempt, out, message_id, sender
        )
        if drawn is None:
            return 1
        out = drawn
        try:
            if out.file is not None and out.content is None:
                out = await self._with_file(out)
            found = await self._already_posted(sender, row_id, attempt, out)
            if found is not None:
                await self._finish(row_id, attempt, out, message_id, delivery=found)
                return 1
            delivery = await self._send(sender, row_id, out, recoverable=current_card)
        except RetryAfter as exc:
            self._metrics.deliveries.labels(out.channel, "retry_after").inc()
            log.warning(
                "outbox.retry_after id=%d channel=%s seconds=%.1f", row_id, out.channel, exc.seconds
            )
            await self._reschedule(row_id, attempt, exc.seconds, exc.detail, count_attempt=False)
            return 1
        except Unavailable as exc:
            self._metrics.deliveries.labels(out.channel, "unavailable").inc()
            if attempt >= self._max_attempts:
                await self._finish(row_id, attempt, out, message_id, error=exc)
            else:
                backoff = min(0.5 * 2 ** (attempt - 1), 300.0) * random.uniform(0.5, 1.5)
                log.warning(
                    "outbox.unavailable id=%d channel=%s attempt=%d retry_in=%.1f",
                    row_id,
                    out.channel,
                    attempt,
                    backoff,
                )
                await self._reschedule(row_id, attempt, backoff, exc.detail, count_attempt=True)
            return 1
        except DeliveryError as exc:
            await self._finish(row_id, attempt, out, message_id, error=exc)
            return 1
        except Exception as exc:  # a bug in an adapter must not stop the other deliveries
            log.exception("outbox.sender_crashed id=%d channel=%s", row_id, out.channel)
            await self._reschedule(row_id, attempt, 5.0, repr(exc), count_attempt=True)
            return 1
        await self._finish(row_id, attempt, out, message_id, delivery=delivery)
        return 1

    async def _with_file(self, out: Outbound) -> Outbound:
        """The file's bytes, fetched from the platform holding it now, at send time: the desk
        stores no copy (forgetting a customer has no file to chase), and a retried row fetches
        again. A customer's file that cannot be fetched for good (gone, over the platform's
        limit) becomes a line in the thread saying so; an agent's file that cannot be fetched
        fails the row, which the thread reports as any undelivered message."""
        ref = out.file
        assert ref is not None
        fetch = getattr(self._senders.get(ref.source), "fetch_file", None)
        try:
            if fetch is None:
                raise BadRequest(f"{ref.source} is not configured")
            content: FileContent = await fetch(ref)
        except (RetryAfter, Unavailable):
            raise
        except DeliveryError as exc:
            if out.kind != "slack_thread_file":
                raise
            log.warning(
                "outbox.file_unfetchable ticket=%s source=%s error=%s",
                out.ticket_id,
                ref.source,
                exc.detail,
            )
            notice = (
                f"⚠️ The customer's {describe(ref.kind, ref.name, ref.size)} could not be"
                f" fetched from {PLATFORM.get(ref.source, ref.source)}: {exc.detail}. Ask them"
                " to send it again, or another way."
            )
            text = f"{out.text}\n{notice}" if out.text else notice
            return out.model_copy(update={"kind": "slack_thread", "file": None, "text": text})
        return out.model_copy(update={"content": content})

    async def _render(
        self,
        renderers: Sequence[Renderer],
        row_id: int,
        attempt: int,
        out: Outbound,
        message_id: int | None,
        sender: ChannelSender | None = None,
    ) -> Outbound | None:
        """The row drawn by the renderers that want it; None when a renderer said there is
        nothing to send (the row is done) or nowhere to send it (the row failed)."""
        try:
            for renderer in renderers:
                if renderer.wants(out):
                    out = await renderer.render(out, row_id, sender)
        except NothingToSay:
            await self._finish(row_id, attempt, out, message_id, delivery=Delivery())
            return None
        except NotPosted as exc:
            await self._finish(row_id, attempt, out, message_id, error=BadRequest(str(exc)))
            return None
        return out

    async def _send(
        self, sender: ChannelSender, row_id: int, out: Outbound, *, recoverable: bool
    ) -> Delivery:
        try:
            return await sender.send(out)
        except DeliveryError as exc:
            if self._recovery is None or not recoverable or not self._recovery.is_gone(out, exc):
                raise
            log.warning(
                "outbox.card_gone id=%d ticket=%s kind=%s error=%s",
                row_id,
                out.ticket_id,
                out.kind,
                exc.detail,
            )
            return await self._recovery.recover(row_id, out, exc)

    async def _already_posted(
        self, sender: ChannelSender, row_id: int, attempt: int, out: Outbound
    ) -> Delivery | None:
        """Before posting again into Slack what may be there already, look for it.

        A row claimed again after an attempt whose outcome is unknown (its process died, or the
        call timed out, while Slack held the answer) may already be in Slack. Every post carries
        its row id in message metadata, so the post is looked for first and, when found,
        recorded as sent instead of posted twice. A Slack that cannot answer (5xx, 429) makes the
        row wait and try again rather than post blind; one that refuses the lookup (a missing
        ``channels:history`` scope, a thread that is gone) lets the post go ahead as before.
        """
        find = getattr(sender, "find_posted", None)
        if attempt <= 1 or find is None:
            return None
        try:
            found: Delivery | None = await find(out)
        except (RetryAfter, Unavailable):
            raise
        except DeliveryError as exc:
            log.warning(
                "outbox.lookup_refused id=%d kind=%s error=%s: posting again",
                row_id,
                out.kind,
                exc.detail,
            )
            return None
        if found is not None:
            log.info(
                "outbox.found_posted id=%d kind=%s ts=%s: recorded, not posted again",
                row_id,
                out.kind,
                found.platform_message_id,
            )
        return found

    async def _pace(self, out: Outbound) -> None:
        """Wait until the desk's own rate limit lets ``out`` go (used outside the claim loop)."""
        for _ in range(100):  # a bucket refills within seconds; never spin forever
            wait = await self._limiter.reserve(out, out.destination)
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def _reschedule(
        self, row_id: int, attempt: int, seconds: float, error: str | None, *, count_attempt: bool
    ) -> None:
        async with self._sessions.begin() as session:
            row = await session.get(OutboxRow, row_id, with_for_update=True)
            if row is None or row.status != "sending" or row.attempts != attempt:
                return
            row.status = "pending"
            row.lease_until = None
            row.next_attempt_at = self._clock.now() + timedelta(seconds=seconds)
            if error is not None:
                row.last_error = error
            if not count_attempt:
                row.attempts -= 1
        if seconds <= 0:
            self.wakeup.set()
        else:
            heapq.heappush(self._put_off, time.monotonic() + seconds)

    def _pause(self) -> float:
        """How long the idle loop may sleep: until its next poll, or the soonest row it put
        off, whichever comes first."""
        now = time.monotonic()
        while self._put_off and self._put_off[0] <= now:
            heapq.heappop(self._put_off)
        if not self._put_off:
            return self._idle_poll
        return min(self._idle_poll, self._put_off[0] - now)
