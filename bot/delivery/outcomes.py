"""Recording what a platform said about an outbox row, exactly once, and what follows from it.

The outbox's sending half is :class:`bot.delivery.outbox.OutboxSender`; this is its recording
half: the row's outcome, the ticket message's delivery, the card's ts, the thread line for a
message the customer did not get, and :class:`bot.core.step.DeliveryRecorded` for the features
that care, in one transaction per outcome (a group of them on SQLite, recorded in bulk).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.core.step import DeliveryRecorded, OutsideWindow
from bot.core.tickets import Desk, Desks
from bot.domain.outbound import Delivery, DeliveryError, Forbidden, Outbound, WindowClosed
from bot.domain.rules import Rules
from storage.models import HomeView, Identity, Incident, Message, OutboxRow, Ticket
from storage.statements import Statement

log = logging.getLogger("deskbot.outbox")

# A database that blinks (a dropped connection, a failover, SQLite busy) while the outcome of a
# send is recorded: tried again after these pauses, about 6 seconds in all.
_RECORD_PAUSES = (0.1, 0.3, 0.6, 1.0, 2.0, 2.0)
_DB_ERRORS = (DBAPIError, OSError, asyncio.TimeoutError)

# What _record_in reads, built once (on PostgreSQL, where each outcome is recorded alone, building
# them was a good part of recording one), the ids as an expanding parameter; on SQLite run on
# the driver (storage/statements.py).
_ROWS = Statement(
    select(OutboxRow).where(OutboxRow.id.in_(bindparam("ids", expanding=True))).with_for_update()
)
_TICKETS = Statement(
    select(Ticket)
    .where(Ticket.id.in_(bindparam("ids", expanding=True)))
    .order_by(Ticket.id)
    .with_for_update()
)
_MESSAGES = Statement(select(Message).where(Message.id.in_(bindparam("ids", expanding=True))))


@dataclass
class Outcome:
    """A delivery's outcome, waiting to be recorded (OutboxSender._recorded)."""

    row_id: int
    attempt: int
    out: Outbound
    message_id: int | None
    delivery: Delivery | None
    error: DeliveryError | None
    recorded: bool = False
    result: str | BaseException | None = None


class _Failed(Exception):
    """An outcome recorded without a savepoint raised (OutcomeRecorder._record_in)."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index)
        self.index, self.error = index, error


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "deskbot_deliveries",
            "Outbound deliveries by channel and result",
            ["channel", "result"],
            registry=registry,
        )


class OutcomeRecorder:
    """What :class:`OutboxSender` records with; it sets these up."""

    _sessions: async_sessionmaker[AsyncSession]
    _desks: Desks
    _rules: Rules
    _clock: Clock
    _metrics: Metrics
    _unrecorded: dict[int, Delivery]
    _one_writer: bool
    _to_record: list[Outcome]
    _recording: asyncio.Lock
    _turn: Callable[[], Awaitable[None]]
    wakeup: asyncio.Event
    sent: int

    async def _finish(
        self,
        row_id: int,
        attempt: int,
        out: Outbound,
        message_id: int | None,
        *,
        delivery: Delivery | None = None,
        error: DeliveryError | None = None,
    ) -> None:
        """Record a row's outcome, retrying a database that blinks.

        After a successful send this commit is all that stands between one delivery and two: if
        it is lost, the row's lease runs out and it is sent again. So a failed commit is tried
        again for a few seconds (a dropped connection, a failover, SQLite busy); if the database
        stays away, the delivery is remembered in this process, so that when the row comes back
        to us it is recorded instead of sent again, and an ERROR says what may happen.
        """
        result = "sent" if error is None else type(error).__name__.lower()
        recorded: str | None = None
        for pause in (*_RECORD_PAUSES, None):
            try:
                recorded = await self._recorded(
                    Outcome(row_id, attempt, out, message_id, delivery, error)
                )
                break
            except _DB_ERRORS as exc:
                if pause is None:
                    if delivery is not None:
                        self._unrecorded[row_id] = delivery
                    log.error(
                        "outbox.unrecorded id=%d channel=%s kind=%s result=%s error=%s: the "
                        "database could not record the outcome; it is recorded when the row "
                        "comes back to this process, another process may send it again",
                        row_id,
                        out.channel,
                        out.kind,
                        result,
                        type(exc).__name__,
                    )
                    return
                log.warning(
                    "outbox.record_retry id=%d error=%s retry_in=%.1f",
                    row_id,
                    type(exc).__name__,
                    pause,
                )
                await asyncio.sleep(pause)
        self._unrecorded.pop(row_id, None)
        if recorded is None:
            return  # lease lost; the other worker's outcome stands
        self._metrics.deliveries.labels(out.channel, result).inc()
        # Logged only once committed: "sent" in the log means "sent" in the database.
        if error is None:
            self.sent += 1
            log.info("outbox.sent id=%d channel=%s kind=%s", row_id, out.channel, out.kind)
        else:
            log.warning(
                "outbox.failed id=%d channel=%s kind=%s error=%s",
                row_id,
                out.channel,
                out.kind,
                recorded,
            )

    async def _recorded(self, item: Outcome) -> str | None:
        """Record an outcome, in one transaction with the others waiting to be recorded.

        On SQLite (one writer at a time) outcomes that finish while a recording transaction
        runs are recorded together by the next one, in bulk (a failing one rolled back alone,
        see _record): a group commit, so a burst costs one commit per group instead of one per
        delivery, while a single delivery is recorded at once. On PostgreSQL each outcome is
        its own transaction, as several processes record side by side and must not hold each
        other's locks.
        """
        if not self._one_writer:
            [result] = await self._record([item])
            if isinstance(result, BaseException):
                raise result
            return result
        self._to_record.append(item)
        # Let the deliveries whose answers are in already add theirs: on SQLite nothing below
        # waits, so without this pause every group would be one outcome.
        await asyncio.sleep(0)
        async with self._recording:
            if not item.recorded:
                group, self._to_record = self._to_record, []
                try:
                    results = await self._record(group)
                except Exception as exc:
                    results = [exc] * len(group)
                except BaseException:
                    # Cancelled (a shutdown): the others' outcomes are still theirs to record.
                    self._to_record = [i for i in group if i is not item] + self._to_record
                    raise
                for waiting, result in zip(group, results, strict=True):
                    waiting.recorded, waiting.result = True, result
        if isinstance(item.result, BaseException):
            raise item.result
        return item.result

    async def _record(self, items: list[Outcome]) -> list[str | BaseException | None]:
        """Record the outcomes in one transaction; an outcome is None when the lease was lost
        meanwhile, or the exception that recording it raised.

        In bulk first: every outcome in the one transaction, without a savepoint each, and the
        ORM's changes flushed once at the commit (a savepoint an outcome was two statements and
        a flush of its own). If one raises, that transaction, with everything recorded in it,
        is rolled back, and the others are recorded again in a new one, each in a savepoint as
        before, while the failing one is not tried again: it is rolled back alone."""
        try:
            return await self._record_in(items, savepoints=False)
        except _Failed as failed:
            rest = items[: failed.index] + items[failed.index + 1 :]
            results = await self._record_in(rest, savepoints=True) if rest else []
            results.insert(failed.index, failed.error)
            return results

    async def _record_in(
        self, items: list[Outcome], *, savepoints: bool
    ) -> list[str | BaseException | None]:
        """One transaction recording the outcomes (see _record): with ``savepoints`` each in a
        savepoint of its own, an outcome that raises giving its exception as its result; without,
        the first that raises rolls the transaction back (_Failed)."""
        results: list[str | BaseException | None] = []
        wake = False
        await self._turn()
        async with self._sessions.begin() as session:
            # What the outcomes touch, read (and their rows locked) in three statements rather
            # than three for each; the session holds them for the gets below.
            await _ROWS.rows(session, ids=[i.row_id for i in items])
            tickets = {i.out.ticket_id for i in items if i.out.ticket_id}
            if tickets:
                # Locked, like every step that changes a ticket (its SLA clocks, the card drawn
                # from it): read unlocked on PostgreSQL, a resolve committed meanwhile went
                # unseen, and the card drawn here, sent after the resolve's, showed the ticket
                # as it was before.
                await _TICKETS.rows(session, ids=sorted(tickets))
            messages = {i.message_id for i in items if i.message_id}
            if messages:
                await _MESSAGES.rows(session, ids=sorted(messages))
            for index, item in enumerate(items):
                try:
                    if savepoints:
                        async with session.begin_nested():
                            outcome, queued = await self._record_one(session, item)
                    else:
                        outcome, queued = await self._record_one(session, item)
                    results.append(outcome)
                    wake = wake or queued
                except _DB_ERRORS:
                    raise  # the transaction is lost: every outcome in it is tried again
                except Exception as exc:
                    if not savepoints:
                        raise _Failed(index, exc) from exc
                    results.append(exc)
        if wake:
            self.wakeup.set()
        return results

    async def _record_one(self, session: AsyncSession, item: Outcome) -> tuple[str | None, bool]:
        """Record one outcome; returns it (None when the lease was lost) and whether anything
        was queued."""
        row_id, attempt, out, message_id = item.row_id, item.attempt, item.out, item.message_id
        delivery, error = item.delivery, item.error
        row = await session.get(OutboxRow, row_id)  # read and locked by _record
        if row is None or row.attempts != attempt:
            return None, False
        if row.status == "sent" and delivery is not None:
            return "sent", False  # an earlier try did commit; only its answer was lost
        if row.status != "sending":
            return None, False
        message = await session.get(Message, message_id) if message_id else None
        ticket = await session.get(Ticket, out.ticket_id) if out.ticket_id else None
        now = self._clock.now()
        row.lease_until = None  # after the gets: their autoflush would write it on its own
        desk = self._desks(session, now)
        if error is None:
            assert delivery is not None
            row.status = "sent"
            row.sent_at = now
            row.platform_message_id = delivery.platform_message_id
            if out.kind == "slack_card" and out.incident_id is not None:
                incident = await session.get(Incident, out.incident_id)
                if incident is not None:
                    incident.slack_ts = delivery.platform_message_id
            elif out.kind == "slack_card" and ticket is not None:
                ticket.slack_ts = delivery.platform_message_id
            if out.kind == "slack_home":
                home = await session.get(HomeView, out.destination)
                if home is not None:
                    home.published_at = now
            if message is not None:
                message.platform_message_id = delivery.platform_message_id
                message.delivery = "sent"
                if message.slack_ts and ticket is not None:
                    desk.react(ticket, message.slack_ts, self._rules.slack.relayed_reaction)
            outcome = "sent"
        else:
            row.status = "failed"
            row.last_error = f"{type(error).__name__}: {error.detail}"[:2000]
            outcome = row.last_error
            if message is not None:
                message.delivery = "failed"
                message.delivery_error = row.last_error
            if isinstance(error, WindowClosed):
                # Not a dead end: bot/window holds an agent's reply (or sends a template, or
                # skips a notice) and says so in the thread.
                await desk.publish(OutsideWindow(row, ticket, message, error.detail))
                outcome = f"{row.status}: {error.detail}"
            elif ticket is not None and out.channel != "slack":
                await self._report_failure(desk, ticket, message, error, out)
        # The SLA counts an accepted reply (or one held for WhatsApp's window: the agent
        # answered, the customer is told by template); an incident shows a Reply to all's
        # progress.
        delivered = error is None or row.status == "held"
        await desk.publish(DeliveryRecorded(ticket, message, delivered=delivered))
        queued = await desk.queue(f"outbox:{row_id}") > 0
        return outcome, queued

    async def _report_failure(
        self,
        desk: Desk,
        ticket: Ticket,
        message: Message | None,
        error: DeliveryError,
        out: Outbound,
    ) -> None:
        """Make a message the customer did not get impossible to miss in Slack."""
        if out.template is not None:
            # A template WhatsApp refused (unknown, wrong parameters, paused): a setup problem
            # an admin must fix; also listed by /healthz.
            desk.thread(
                ticket,
                f"⚠️ WhatsApp refused the template *{out.template.name}*"
                f" ({out.template.language}): {error.detail}. The customer was not told; fix"
                f" the template in WhatsApp Manager or `whatsapp.templates.{out.template.purpose}`"
                " in rules.yaml. Replies that wait are still delivered when the customer writes."
                " Not retried.",
            )
            return
        if isinstance(error, Forbidden):
            identity = await desk.s.scalar(
                select(Identity).where(
                    Identity.channel == ticket.channel, Identity.chat_id == ticket.chat_id
                )
            )
            if identity is not None:
                identity.blocked = True
            why = (
                f"mail to this address is undeliverable ({error.detail})"
                if ticket.channel == "email"
                else "the customer has blocked the bot, so they can't receive messages"
            )
        else:
            why = f"the platform refused it ({error.detail})"
        if message is not None and not message.text and message.attachments:
            shared = message.attachments[0]
            what = f"the file {shared.get('name') or shared.get('id') or ''}".rstrip()
        else:
            what = f'"{message.text[:200]}"' if message is not None else "A message to the customer"
        desk.thread(ticket, f"⚠️ Not delivered: {what}. Reason: {why}. It will not be retried.")
        if message is not None and message.slack_ts:
            desk.react(ticket, message.slack_ts, self._rules.slack.failed_reaction)
        if isinstance(error, Forbidden):
            await desk.refresh_card(ticket)
