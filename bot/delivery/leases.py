"""Who holds a lease, and taking over at once the leases of this host's dead processes.

Every inbox and outbox claim records its owner: ``<hostname>:<pid>:<boot id>``, the boot id
being random per process. When a desk starts, it looks at the owners of the leases still held:

* an owner on **this host** whose pid is not running (or is a zombie) is dead: its leases are
  expired now rather than in up to 60 seconds;
* an owner on this host with **our own pid** but another boot id is an earlier process that had
  our pid (a container restarting as pid 1, pid reuse): dead too, since we have not claimed
  anything yet and our boot id is new;
* an owner on **another host** is judged by its heartbeat: every desk registers in the
  ``processes`` table and beats every second (:class:`Heartbeat`); one whose last beat is more
  than :data:`DEAD_AFTER` old is dead, wherever it ran, and every running desk checks for such
  processes every second, not only at start-up. An owner on another host that never registered
  (a desk from before heartbeats) is waited out: its 60-second lease.

A process that stalls longer than :data:`DEAD_AFTER` (a frozen VM, a database it cannot reach
for its beat) is taken for dead although it may still finish what it was doing: the row it was
sending may then go out twice (each outcome is recorded once, by whoever holds the current
claim; see ``OutboxSender._record``). Clocks are compared across hosts, so keep them in sync
(NTP); a skew adds to :data:`DEAD_AFTER`.

Why that is safe: a process that is not running holds no transaction and sends nothing, so no
one else is working on what it claimed; expiring its lease only lets the row be claimed at once,
exactly as it would be once the lease ran out. It relies on the hostname naming one pid
namespace (true on a machine, and in Docker or Kubernetes, where each container or pod has its
own hostname); two containers sharing a hostname *and* not sharing pids must not share a
database.

What a dead process was sending (an outbox row in ``sending``) may or may not have reached the
platform. The desk's own notices to a customer (acknowledgement, welcome, reopened, rating
prompt and thanks) are then not sent again, so no customer gets two acknowledgements: the row
becomes ``unknown`` and the ticket's thread says the customer may not have got it. An agent's
reply is sent again (losing an answer is worse than a duplicate) and the thread says it may
arrive twice. A Slack post is looked for first by the outbox row id it carries in its message
metadata, and recorded as sent when Slack has it (see ``OutboxSender._already_posted``); only a
post Slack does not have is posted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.base.clock import Clock
from bot.base.process import is_dead, this_process
from bot.core.tickets import Desks
from bot.domain.outbound import Outbound
from storage.models import AutomationTimer, Message, OutboxRow, Process, SlaTimer, Ticket
from storage.queues import expire_inbox_leases, open_leases, outbox_held_by, process_beat

log = logging.getLogger("deskbot.leases")

UNKNOWN_OUTCOME = "outcome unknown after a crash; not re-sent to avoid a duplicate"
HEARTBEAT_EVERY = 1.0  # seconds between a desk's beats, and between its checks on the others
DEAD_AFTER = timedelta(seconds=5)  # no beat for this long: dead
CUSTOMER_CHANNELS = ("telegram", "whatsapp", "email")


@dataclass
class Reclaimed:
    owners: list[str]
    inbox: int = 0
    outbox: int = 0
    unknown: int = 0  # desk notices not sent again
    resent_replies: int = 0


def _is_desk_notice(out: Outbound, message: Message | None) -> bool:
    """A message the desk wrote itself to a customer, as opposed to an agent's reply."""
    if out.channel in CUSTOMER_CHANNELS and out.kind == "template":
        return True  # WhatsApp's reply_waiting or rating_request (bot/window)
    if out.channel not in CUSTOMER_CHANNELS or out.kind != "text":
        return False
    if message is None:
        return True  # only agents' replies are linked to a ticket message
    return message.purpose is not None or message.author == "desk"


def _quote(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return f'"{text if len(text) <= limit else text[: limit - 1] + "…"}"'


async def reclaim_dead_leases(
    sessions: async_sessionmaker[AsyncSession],
    desks: Desks,
    now: datetime,
    *,
    dead_after: timedelta = DEAD_AFTER,
) -> Reclaimed:
    """Take over at once what dead desks had claimed: this host's that no longer run, and any
    registered desk whose heartbeat is older than ``dead_after``. Their process rows go."""
    async with sessions.begin() as session:
        leases = await open_leases(session)
        leases.update(await _timer_owners(session))
        registered = dict(
            (await session.execute(select(Process.owner, Process.heartbeat_at))).all()
        )
        me = this_process()
        stale = {o for o, beat in registered.items() if o != me and beat < now - dead_after}
        owners = sorted(stale | {o for o in leases | set(registered) if is_dead(o)})
        done = Reclaimed(owners)
        if not owners:
            return done
        # Ran out a moment ago: claimable by the very next claim, even under a frozen test clock.
        expired = now - timedelta(seconds=1)
        done.inbox = await expire_inbox_leases(session, owners, expired)
        for timers in (SlaTimer, AutomationTimer):
            await session.execute(
                update(timers)
                .where(timers.lease_owner.in_(owners))
                .values(lease_until=expired, lease_owner=None)
            )
        for row in await outbox_held_by(session, owners):
            await _settle_unknown_send(session, desks, now, row, done, expired)
        await session.execute(delete(Process).where(Process.owner.in_(owners)))
    log.info(
        "leases.reclaimed owners=%s inbox=%d outbox=%d not_resent=%d resent_replies=%d",
        ",".join(owners),
        done.inbox,
        done.outbox,
        done.unknown,
        done.resent_replies,
    )
    return done


async def _timer_owners(session: AsyncSession) -> set[str]:
    owners: set[str] = set()
    for timers in (SlaTimer, AutomationTimer):
        found = await session.scalars(
            select(timers.lease_owner).where(timers.lease_owner.is_not(None)).distinct()
        )
        owners.update(o for o in found.all() if o)
    return owners


class Heartbeat:
    """This desk's row in ``processes``: registered at start, beaten every second, removed at
    a clean stop; and, on each beat, the takeover of whatever dead desks held."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        desks: Desks,
        clock: Clock,
        *,
        every: float = HEARTBEAT_EVERY,
        dead_after: timedelta = DEAD_AFTER,
        on_takeover: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._desks = desks
        self._clock = clock
        self._every = every
        self._dead_after = dead_after
        self.on_takeover = on_takeover
        self.owner = this_process()

    async def beat(self) -> None:
        """Say we are alive; registers again if another desk took us for dead meanwhile."""
        async with self._sessions.begin() as session:
            await process_beat(session, self.owner, self._clock.now())

    async def reap(self) -> Reclaimed:
        done = await reclaim_dead_leases(
            self._sessions, self._desks, self._clock.now(), dead_after=self._dead_after
        )
        if done.owners and self.on_takeover is not None:
            self.on_takeover()
        return done

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.beat()
                await self.reap()
            except Exception as exc:  # the database is away: the loops say so; try again
                log.warning("leases.heartbeat_failed error=%s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._every)

    async def leave(self) -> None:
        """At a clean stop: nothing is held any more, so no one needs to wait for us."""
        async with self._sessions.begin() as session:
            await session.execute(delete(Process).where(Process.owner == self.owner))


async def _settle_unknown_send(
    session: AsyncSession,
    desks: Desks,
    now: datetime,
    row: OutboxRow,
    done: Reclaimed,
    expired: datetime,
) -> None:
    """A row that was ``sending`` when its process died: the platform may or may not have it."""
    out = Outbound.model_validate(row.payload)
    message = await session.get(Message, row.message_id) if row.message_id else None
    ticket = await session.get(Ticket, row.ticket_id) if row.ticket_id else None
    desk = desks(session, now)
    row.lease_owner = None
    if _is_desk_notice(out, message):
        row.status = "unknown"
        row.lease_until = None
        row.last_error = UNKNOWN_OUTCOME
        if message is not None:
            message.delivery = "unknown"
            message.delivery_error = UNKNOWN_OUTCOME
        done.unknown += 1
        log.warning(
            "outbox.outcome_unknown id=%d channel=%s ticket=%s not_resent=1",
            row.id,
            row.channel,
            row.ticket_id,
        )
        if ticket is not None:
            what = (
                f"the WhatsApp template *{out.template.name}*"
                if out.template is not None
                else _quote(out.text)
            )
            desk.thread(
                ticket,
                f"⚠️ The desk restarted while sending this to the customer: {what}. "
                "They may not have got it; it was not sent again, to avoid a duplicate.",
            )
    else:
        row.lease_until = expired  # claimable at once: sent again
        done.outbox += 1
        if out.channel in CUSTOMER_CHANNELS and out.kind == "text":
            done.resent_replies += 1
            log.warning(
                "outbox.outcome_unknown id=%d channel=%s ticket=%s resent=1",
                row.id,
                row.channel,
                row.ticket_id,
            )
            if ticket is not None:
                desk.thread(
                    ticket,
                    f"⚠️ The desk restarted while sending this reply to the customer: "
                    f"{_quote(out.text)}. It is being sent again, so they may get it twice.",
                )
    await desk.queue(f"reclaim:{row.id}")
