"""The inbox side: accept events durably, then process them one transaction each, in order.

An inbox row goes pending → processing (leased) → done. Processing one row is a single
transaction that applies the event to the tickets, queues everything the desk wants to say in
the outbox, and marks the row done, so a crash at any point either left no trace or finished
the whole step. A leased row whose process died is claimed again when its lease runs out, or
at once when a desk restarts on the same host (:mod:`bot.delivery.leases`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.base.process import this_process
from bot.base.repeat import Streak, nap, pause
from bot.core.step import CustomerWrote
from bot.core.ticket_step import TooEarly
from bot.core.tickets import Desk, Desks
from bot.delivery.inbox import fitted, storable, unfit
from bot.delivery.routes import Preparers, Routes
from bot.domain.classifier import Classifier
from bot.domain.events import (
    CustomerButton,
    CustomerContact,
    CustomerMessage,
    CustomerStart,
    Event,
    Ignored,
    event_from_json,
    event_to_json,
)
from bot.domain.prepared import Prepared
from nlp.language import detect_language
from storage.db import one_writer, problem, shared_url
from storage.intake import Spool, database_path
from storage.models import Identity, InboxRow, Ticket
from storage.queues import inbox_add, inbox_behind, inbox_claim, release_lost_claims
from storage.statements import Statement

log = logging.getLogger("deskbot.dispatcher")
NO_PREPARERS = Preparers()
# How long an event that came too early (bot.core.tickets.TooEarly) may wait: 30 tries, 2 s apart.
TOO_EARLY_ATTEMPTS = 30
TOO_EARLY_STEP = timedelta(seconds=2)
# How long one SQLite transaction of the dispatcher keeps taking events (seconds), while no
# inbox write waits for the one writer: one that waits ends the transaction after the event it
# is on (DbInbox.waiting), so a webhook waits for one event's step, never for the budget. What
# the budget still bounds is the outbox's wait to claim and record (cards of a burst).
BATCH_BUDGET = 0.025
# The most spool rows (storage/intake.py) moved into the inbox in one transaction, and how long
# a stopping desk lets the mover finish (seconds; what is left is moved at the next start).
MOVE_GROUP = 200
MOVE_AT_STOP = 5.0


Claim = tuple[int, int, dict[str, Any]]  # an inbox row's id, attempt and payload
# What a customer sends that opens WhatsApp's 24-hour window again (a reaction, an edit or a
# number change are not counted: when in doubt the desk sends a template, which always passes).
OPENS_WINDOW = (CustomerMessage, CustomerButton, CustomerContact, CustomerStart)


@dataclass(frozen=True, slots=True)
class Customer:
    """What the classifier is told of a message's sender: the key the VIP list is checked
    against, and how many tickets they opened within the repeat window."""

    key: str
    recent: int


def _events(claims: Sequence[Claim]) -> list[Event]:
    """The claims' events that parse (one that does not fails in its own preparation)."""
    events = []
    for _, _, payload in claims:
        try:
            events.append(event_from_json(payload))
        except Exception:  # reported by _prepare, for that event alone
            continue
    return events


class _Alone(Exception):
    """The first event of a transaction failed (it runs without a savepoint)."""

    def __init__(self, row_id: int, attempt: int, error: Exception) -> None:
        super().__init__(row_id, attempt)
        self.row_id, self.attempt, self.error = row_id, attempt, error


# The states of the rows a transaction may take, locked, and the rows it finished: built once
# (on PostgreSQL they run for every event), on SQLite run on the driver (storage/statements.py).
_STATES = Statement(
    select(InboxRow.id, InboxRow.status, InboxRow.attempts)
    .where(InboxRow.id.in_(bindparam("ids", expanding=True)))
    .with_for_update()
)
_INBOX: Table = InboxRow.__table__  # type: ignore[assignment]
_FINISHED = Statement(
    update(_INBOX)
    .where(_INBOX.c.id == bindparam("b_id"))
    .values(status="done", processed_at=bindparam("b_at"), lease_until=None, error=None)
)


def _settling(row_id: int, attempt: int, outcome: dict[str, Any]) -> Any:
    """The update that writes a retry's outcome, if the row is still ours."""
    return (
        update(InboxRow)
        .where(
            InboxRow.id == row_id,
            InboxRow.attempts == attempt,
            InboxRow.status == "processing",
        )
        .values(**outcome)
    )


class DbInbox:
    """The :class:`bot.delivery.inbox.Inbox` the adapters write to."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self.arrived = asyncio.Event()  # wakes the dispatcher without polling latency
        # Intake first on SQLite, whose one connection is the one writer: while events wait
        # to be written into the inbox, the dispatcher and the outbox start no transaction
        # (turn()). A burst then grows the backlog, not the platforms' timeouts and retries.
        self._one_writer = one_writer(sessions)
        self._clear = asyncio.Event()
        self._clear.set()
        # SQLite's intake (storage/intake.py): events are made durable in the spool beside
        # the database and the platform answered; the mover writes them into the inbox when
        # the one writer is free.
        database = database_path(shared_url(sessions.kw["bind"])) if self._one_writer else None
        self._spool = Spool(database) if database is not None else None
        self._mover: asyncio.Task[None] | None = None

    def waiting(self) -> bool:
        """Whether the mover waits for the one writer (or writes) now."""
        return self._one_writer and not self._clear.is_set()

    async def turn(self) -> None:
        """Wait while the mover has events to write (SQLite; at once on PostgreSQL)."""
        while self._one_writer and not self._clear.is_set():
            await self._clear.wait()

    async def accept(self, events: Sequence[Event], raw: Mapping[str, Any]) -> int:
        """A platform's delivery, while it waits for the answer: on SQLite through the spool."""
        return await self._accept([(ev, raw) for ev in events], spool=True)

    async def accept_each(self, items: Sequence[tuple[Event, Mapping[str, Any]]]) -> int:
        """Events each with the payload it came in, in one transaction (a poll's updates: one
        commit for the poll, where a commit an update was a transaction a message). A poll
        waits for nobody's answer: straight into the inbox, where the spool would only add a
        second write and a move to each message's way to its card."""
        return await self._accept(items, spool=False)

    async def _accept(
        self, items: Sequence[tuple[Event, Mapping[str, Any]]], *, spool: bool
    ) -> int:
        if not items:
            return 0
        events = [ev for ev, _ in items]
        now = self._clock.now()
        rows = []
        for ev, raw in items:
            # What the database would refuse (NUL, lone surrogates, NaN, an id longer than its
            # column, an integer beyond int64) never reaches it: an event that cannot be stored
            # would be retried by the platform forever, one that cannot be processed would fail
            # five times in the dispatcher. It is kept as ``ignored``, with the reason.
            payload, unfit_why = unfit(storable(event_to_json(ev)))
            ignored = isinstance(ev, Ignored) or unfit_why is not None
            rows.append(
                {
                    "channel": ev.channel,
                    "external_id": fitted(storable(ev.external_id)),
                    "conversation": fitted(storable(ev.conversation)),
                    "kind": ev.kind,
                    "payload": payload,
                    "raw": storable(dict(raw)),
                    # Unknown kinds are kept for audit but never processed.
                    "status": "ignored" if ignored else "pending",
                    "error": unfit_why,
                    "attempts": 0,
                    "received_at": now,
                    "processed_at": now if ignored else None,
                }
            )
            if unfit_why is not None:
                log.warning(
                    "inbox.unfit channel=%s kind=%s reason=%s", ev.channel, ev.kind, unfit_why
                )
        added = await self._write(rows, spool=spool)
        if added:
            self.arrived.set()
        log.info(
            "inbox.accepted new=%d duplicates=%d kinds=%s",
            added,
            len(rows) - added,
            ",".join(sorted({ev.kind for ev in events})),
        )
        return added

    async def _write(self, rows: Sequence[dict[str, Any]], *, spool: bool) -> int:
        """Write ``rows`` durably; how many were new.

        On SQLite, for a platform that waits while the one writer is busy, into the spool
        (storage/intake.py), from where the mover writes them into the inbox when the writer
        is free (:meth:`_moving`). Otherwise (the writer free and the spool empty, a poll,
        PostgreSQL, an in-memory SQLite database, which no spool can stand beside) into the
        inbox in a transaction of the write's own: on an idle desk the spool would only add a
        second write and a move to the message's way to its card."""
        if self._spool is None or not spool or self._writer_free():
            async with self._sessions.begin() as session:
                return await inbox_add(session, rows)
        added = self._spool.add(rows)  # durable when it returns: the platform may be answered
        self._move()
        return added

    def _writer_free(self) -> bool:
        """Nothing holds the one writer, and the spool is empty (no mover): a write goes in
        now, after everything that came before it. Checked and acted on without an await
        between, so nothing can take the writer or fill the spool in between."""
        return self._mover is None and self._sessions.kw["bind"].pool.checkedout() == 0

    def start(self) -> None:
        """Move what a desk that stopped left in the spool (see :meth:`_moving`)."""
        if self._spool is not None and self._spool.waiting():
            self._move()

    async def close(self) -> None:
        """Let the mover finish what the spool holds (for at most a few seconds: what is left
        is moved at the next start), then close the spool."""
        if self._mover is not None:
            await asyncio.wait({self._mover}, timeout=MOVE_AT_STOP)
            self._mover.cancel()
        if self._spool is not None:
            self._spool.close()

    def _move(self) -> None:
        self._clear.clear()  # the dispatcher and the outbox let the mover go first
        if self._mover is None:
            self._mover = asyncio.create_task(self._moving(), name="inbox.mover")

    async def _moving(self) -> None:
        """Move the spool's rows into the inbox, oldest first, a group a transaction, and
        forget them in the spool once committed (a stop between the two: the next start moves
        them again, and the inbox's unique key drops the second copy). While the database
        refuses, the rows stay in the spool and the move is tried again, each try a little
        later, without holding back the loops meanwhile (they report the database lost)."""
        assert self._spool is not None
        failures = Streak()
        try:
            while taken := self._spool.take(MOVE_GROUP):
                try:
                    async with self._sessions.begin() as session:
                        added = await inbox_add(session, [row for _, row in taken])
                except Exception:
                    wait, loud = failures.failed()
                    if loud:
                        log.exception(
                            "inbox.move_failed waiting=%d failures=%d", len(taken), failures.count
                        )
                    self._clear.set()
                    await asyncio.sleep(wait)
                    self._clear.clear()
                    continue
                if failed := failures.ended():
                    log.info("inbox.move_recovered failures=%d", failed)
                self._spool.drop([spool_id for spool_id, _ in taken])
                if added < len(taken):
                    log.info("inbox.moved new=%d duplicates=%d", added, len(taken) - added)
                if added:
                    self.arrived.set()
        finally:
            self._mover = None
            self._clear.set()


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        desks: Desks,
        classifier: Classifier,
        clock: Clock,
        inbox: DbInbox,
        *,
        routes: Routes,
        preparers: Preparers = NO_PREPARERS,
        outbox_wakeup: asyncio.Event | None = None,
        lease: timedelta = timedelta(seconds=60),
        batch_size: int = 32,
        max_attempts: int = 5,
        retry_base: timedelta = timedelta(seconds=0.5),
        idle_poll: float = 0.5,
        owner: str | None = None,
    ) -> None:
        self._sessions = sessions
        self._desks = desks
        self._rules = desks.rules
        self._routes = routes
        self._preparers = preparers
        self._classifier = classifier
        self._owner = owner or this_process()
        self._clock = clock
        self._inbox = inbox
        self._outbox_wakeup = outbox_wakeup
        self._lease = lease
        self._batch = batch_size
        self._max_attempts = max_attempts
        self._retry_base = retry_base
        self._idle_poll = idle_poll
        self._one_writer = one_writer(sessions)
        self.processed = 0
        self.more = False  # whether the last claim knew of rows claimable right after its batch
        # Retries that could not be written (the database was away): row id → (attempt, what
        # to write), written by the next run_once that reaches the database.
        self._unsettled: dict[int, tuple[int, dict[str, Any]]] = {}
        # Since when the loop has been failing, and why (shown by /healthz); None while it works.
        self.failing: tuple[datetime, str] | None = None
        # When the first run that failed since the last good one began: its claim may have
        # been committed without the answer reaching us (see _release_lost_claims).
        self._failed_since: datetime | None = None

    async def run(self, stop: asyncio.Event) -> None:
        failures = Streak()
        while not stop.is_set():
            began = self._clock.now()
            try:
                done = await self.run_once()
                if not self._unsettled:  # else a retry could not be written: still failing
                    self.failing = None
                if failed := failures.ended():
                    log.info("dispatcher.loop_recovered failures=%d", failed)
            except Exception as exc:
                self._failed_since = self._failed_since or began
                wait, loud = failures.failed()
                if loud:
                    log.exception("dispatcher.loop_error failures=%d", failures.count)
                if self.failing is None:
                    self.failing = (self._clock.now(), problem(exc))
                await pause(stop, wait)  # not woken by new work: it would fail the same way
                continue
            if done and self.more:
                await asyncio.sleep(0)  # the outbox, woken by the batch, starts its sends first
            else:
                # Wake on new input (at once if some arrived during the batch), or poll:
                # another process may have written the inbox, a retry's pause may be over.
                await nap(self._inbox.arrived, stop, self._idle_poll)

    async def run_once(self) -> int:
        """Claim one batch of conversation heads and process them."""
        for row_id, (attempt, outcome) in list(self._unsettled.items()):
            await self._settle(row_id, attempt, outcome)  # raises while the database is away
            del self._unsettled[row_id]
        if self._failed_since is not None:
            await self._release_lost_claims(self._failed_since)
            self._failed_since = None
        await self._inbox.turn()
        # What arrives from now on wakes the loop again (run()); what arrived before is claimed
        # now, or known to wait behind a conversation's earlier message (``more``).
        self._inbox.arrived.clear()
        async with self._sessions.begin() as session:
            rows = await inbox_claim(
                session,
                now=self._clock.now(),
                lease=self._lease,
                limit=self._batch,
                owner=self._owner,
            )
            claims = [(row.id, row.attempts, row.payload) for row in rows]
            # Whether to claim again at once when this batch is done: a full batch may have
            # left rows, and a conversation's next message waits behind the one claimed now.
            # Otherwise the loop waits for new input: claiming again after every batch found
            # nothing on an idle desk and ran before the outbox sent the batch's cards. Only
            # where this process hears of every arrival (SQLite: one process): on PostgreSQL
            # another process may have taken webhooks, or held rows this claim skipped.
            self.more = (
                not self._one_writer
                or len(rows) == self._batch
                or await inbox_behind(session, rows)
            )
        if not claims:
            return 0
        # Outside any transaction, for the whole batch at once: the model (whose micro-batcher
        # then encodes the batch in one pass), the language detector and the knowledge base, so
        # a slow step never holds a database lock.
        customers = await self._customers(_events(claims))
        prepared = await asyncio.gather(
            *(self._prepare(payload, customers) for _, _, payload in claims),
            return_exceptions=True,
        )
        # SQLite has one writer at a time, so events share a transaction (one commit for
        # several), each in a savepoint of its own: a failing event is rolled back alone. A
        # transaction takes events for at most BATCH_BUDGET, or until an inbox write waits for the
        # one writer, then commits and lets the loop answer webhooks. On PostgreSQL
        # processes write side by side, so there each event commits alone and holds its locks
        # (a team's round-robin pointer, say) only for its own step.
        pending = list(zip(claims, prepared, strict=True))
        while pending:
            pending = pending[await self._process(pending) :]
            if self._outbox_wakeup is not None:
                self._outbox_wakeup.set()  # what was committed can go out meanwhile
            if pending:
                await asyncio.sleep(0)
                await self._inbox.turn()
        return len(claims)

    async def _customers(self, events: Sequence[Event]) -> dict[tuple[str, str], Customer]:
        """What the classifier needs to know of the batch's customers, read for the whole batch
        in one session and at most three set-based statements (it was a session and one to
        three statements a message): their VIP key (VIP on any of a customer's identities is
        VIP on all of them) and how many tickets they opened lately. Read outside the step's
        transaction, as before: the classification is worked out before it."""
        senders: list[tuple[str, str]] = sorted(
            {(e.channel, e.sender.external_id) for e in events if isinstance(e, CustomerMessage)}
        )
        found = {key: Customer(f"{key[0]}:{key[1]}", 0) for key in senders}
        if not senders:
            return found
        since = self._clock.now() - timedelta(hours=self._rules.priority.repeat.within_hours)
        vip = self._rules.priority.vip.customers
        async with self._sessions() as session:
            # By id, then matched by (channel, id) here: a sealed address's IN looks under
            # every key a rotation still reads (storage/crypto.py), a row value's would not.
            wanted = set(senders)
            known: dict[tuple[str, str], int] = {
                (channel, external_id): customer_id
                for channel, external_id, customer_id in (
                    await session.execute(
                        select(Identity.channel, Identity.external_id, Identity.customer_id).where(
                            # The channels too: the identities' unique index is (channel,
                            # external id); by the id alone the read went through every one.
                            Identity.channel.in_(sorted({c for c, _ in senders})),
                            Identity.external_id.in_(sorted({e for _, e in senders})),
                        )
                    )
                ).all()
                if (channel, external_id) in wanted
            }
            if not known:
                return found
            ids = sorted(set(known.values()))
            keys: dict[int, list[str]] = {}
            for customer_id, channel, external_id in (
                await session.execute(
                    select(Identity.customer_id, Identity.channel, Identity.external_id).where(
                        Identity.customer_id.in_(ids)
                    )
                )
            ).all():
                keys.setdefault(customer_id, []).append(f"{channel}:{external_id}")
            recent: dict[int, int] = {
                customer_id: int(n)
                for customer_id, n in (
                    await session.execute(
                        select(Ticket.customer_id, func.count())
                        .where(Ticket.customer_id.in_(ids), Ticket.created_at >= since)
                        .group_by(Ticket.customer_id)
                    )
                ).all()
            }
        for sender, customer_id in known.items():
            own = f"{sender[0]}:{sender[1]}"
            key = next((k for k in keys.get(customer_id, ()) if k in vip), own)
            found[sender] = Customer(key, recent.get(customer_id, 0))
        return found

    async def _prepare(
        self, payload: dict[str, Any], customers: Mapping[tuple[str, str], Customer]
    ) -> Prepared:
        """What an event needs from outside the database transaction."""
        event = event_from_json(payload)
        prep = Prepared(event)
        for preparer in self._preparers.before_model:
            await preparer(prep)
        # A status lookup opens no ticket: neither the model nor the detector needed.
        if isinstance(event, CustomerMessage) and prep.lookup is None:
            sender = (event.channel, event.sender.external_id)
            who = customers.get(sender) or Customer(f"{sender[0]}:{sender[1]}", 0)
            prep.cls = await self._classifier.classify(
                event.text, customer_key=who.key, recent_tickets=who.recent
            )
            if event.text:
                # A few milliseconds: in a thread all the same.
                prep.detected = await asyncio.to_thread(
                    detect_language, event.text, self._rules.spoken_languages()
                )
        for preparer in self._preparers.after_model:
            await preparer(prep)
        return prep

    async def _process(self, items: list[tuple[Claim, Prepared | BaseException]]) -> int:
        """Apply claimed events in one transaction for as long as the budget allows (at least
        one); an event that fails is rolled back alone and retried. Returns how many events it
        took.

        The transaction's bookkeeping is set-based: the states of the rows it may take are
        read in one statement, and the rows it finished are marked done in one (an executemany)
        at its end. The first event of a transaction runs without a savepoint (on PostgreSQL,
        where each event commits alone, that is every event): if it fails, the transaction,
        which holds nothing else, is rolled back and its retry written in a transaction of its
        own. Every later event has a savepoint of its own, so it is rolled back alone and its
        retry written in the same transaction."""
        budget = BATCH_BUDGET if self._one_writer else 0.0
        started = time.monotonic()
        taken = 0
        done: list[Desk] = []
        try:
            async with self._sessions.begin() as session:
                retries: list[tuple[int, int, dict[str, Any]]] = []
                finished: list[dict[str, Any]] = []
                # Only the rows' states, locked: their payloads were read by the claim. On
                # PostgreSQL a transaction takes one event, so it locks that one row alone.
                ids = [row_id for (row_id, _, _), _ in (items if budget else items[:1])]
                states = {
                    row_id: (status, attempts)
                    for row_id, status, attempts in await _STATES.rows(session, ids=ids)
                }
                for (row_id, attempt, _), prep in items:
                    if taken:
                        # SQLite's statements run inline and yield only every few ms: let
                        # what arrived meanwhile be read (and spooled) before the next event.
                        await asyncio.sleep(0)
                        if time.monotonic() - started >= budget or self._inbox.waiting():
                            break  # commit, and let the mover that waits go first
                    taken += 1
                    if states.get(row_id) != ("processing", attempt):
                        continue  # our lease ran out and another worker has it now
                    bare = not done and not retries  # nothing else in this transaction yet
                    try:
                        if isinstance(prep, BaseException):
                            raise prep
                        if bare:
                            desk = await self._step(session, prep, row_id)
                        else:
                            async with session.begin_nested():
                                desk = await self._step(session, prep, row_id)
                        done.append(desk)
                        finished.append({"b_id": row_id, "b_at": desk.now})
                    except Exception as exc:
                        if bare:
                            raise _Alone(row_id, attempt, exc) from exc
                        retries.append((row_id, attempt, self._retry(row_id, attempt, exc)))
                await _FINISHED.run_many(session, finished)
                for row_id, attempt, outcome in retries:
                    await session.execute(_settling(row_id, attempt, outcome))
        except _Alone as alone:
            # The transaction's first event failed: rolled back with it, and nothing else was
            # in it. Its retry is written now.
            retry = self._retry(alone.row_id, alone.attempt, alone.error)
            await self._retry_later(alone.row_id, alone.attempt, retry)
            return taken
        except Exception as exc:
            if not taken:
                # It failed before its first event (the database away at its first statement):
                # the run fails, and says so (/healthz); the batch's rows are given back at the
                # next try (_release_lost_claims). Returning 0 here made run_once try the same
                # rows again at once, for ever: a silent spin while the database refused, a
                # connect timeout at a time while it did not answer (the outage test).
                raise
            # The transaction itself failed (its commit, or the database went away): nothing of
            # it stands, so every event it took is retried.
            for (row_id, attempt, _), _prep in items[:taken]:
                await self._retry_later(row_id, attempt, self._retry(row_id, attempt, exc))
            return taken
        for desk in done:
            desk.fx.log_decisions()  # committed: now they happened
        self.processed += len(done)
        return taken

    async def _step(self, session: AsyncSession, prep: Prepared, row_id: int) -> Desk:
        """One event's work, in the caller's transaction (or savepoint)."""
        desk = self._desks(session, self._clock.now())
        ev = prep.event
        if isinstance(ev, OPENS_WINDOW):
            # Before the routes, so the card they draw tells the window this message opened.
            # Never later than now: a platform clock ahead of ours must not stretch the window.
            at = min(ev.sent_at or ev.received_at, desk.now)
            desk.customer_wrote_at = at
            await desk.publish(CustomerWrote(ev.channel, ev.chat_id, at))
        await self._routes.apply(desk, prep)
        await desk.finish()
        await self._queue(session, desk, row_id)
        return desk

    def _retry(self, row_id: int, attempt: int, exc: BaseException) -> dict[str, Any]:
        """Log a failed event and say how its row is retried.

        Left leased for a growing pause, then claimed again: a retry with backoff that keeps
        the conversation's later events waiting behind it, in order. An event that came too
        early waits for what it is about for up to about a minute (a dead process's send is
        taken over in seconds), in steps of at most two seconds."""
        too_early = isinstance(exc, TooEarly)
        if too_early:
            log.info(
                "dispatcher.too_early inbox_id=%d attempt=%d kind=%s",
                row_id,
                attempt,
                type(exc).__name__,
            )
        else:
            log.error(
                "dispatcher.event_failed inbox_id=%d attempt=%d",
                row_id,
                attempt,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        pause = self._retry_base * 2 ** (attempt - 1)
        if too_early:
            failed = attempt >= TOO_EARLY_ATTEMPTS
            pause = min(pause, TOO_EARLY_STEP)
        else:
            failed = attempt >= self._max_attempts
        return {
            "status": "failed" if failed else "processing",
            "lease_until": None if failed else self._clock.now() + pause,
            "error": f"{type(exc).__name__}: {exc}"[:2000],
        }

    async def _retry_later(self, row_id: int, attempt: int, outcome: dict[str, Any]) -> None:
        try:
            await self._settle(row_id, attempt, outcome)
        except Exception as again:
            # The database is away: the row stays leased to this process for the whole lease
            # (a minute), and the conversation's later messages wait behind it. Let it go as
            # soon as the database answers again instead (run_once).
            self._unsettled[row_id] = (attempt, outcome)
            # The loop is failing from now on (/healthz), not only once its next run fails:
            # a connect that hangs until its timeout made that a wait of several timeouts.
            if self.failing is None:
                self.failing = (self._clock.now(), problem(again))
            log.warning(
                "dispatcher.retry_unrecorded inbox_id=%d error=%s",
                row_id,
                type(again).__name__,
            )

    async def _release_lost_claims(self, since: datetime) -> None:
        """Give back the rows a failed run leased and left: its claim committed while the
        link to the database was cut before the answer came back (the run failed, not knowing
        it held them), or a claim that worked followed by a failure before any event was
        processed (reading the batch's customers). Between runs this process holds no inbox
        row it is working on, and a retry's pause is far shorter than a lease, so a row leased
        to us until ``since`` + lease or later is one of those; it held its conversation back
        for a whole lease (a minute) before (the outage test). A row the lost claim's
        transaction did not commit was never leased: nothing to give back."""
        async with self._sessions.begin() as session:
            released = await release_lost_claims(
                session, InboxRow, self._owner, since + self._lease
            )
        if released:
            log.warning("dispatcher.claims_released rows=%d", released)

    async def _settle(self, row_id: int, attempt: int, outcome: dict[str, Any]) -> None:
        async with self._sessions.begin() as session:
            await session.execute(_settling(row_id, attempt, outcome))

    async def _queue(self, session: AsyncSession, desk: Desk, inbox_id: int) -> None:
        # Deterministic keys: if this step is ever redone, it cannot queue twice.
        await desk.queue(f"inbox:{inbox_id}")
