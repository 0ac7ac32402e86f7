"""Who holds a lease, and taking over at once the leases of this host's dead processes.

Every inbox and outbox claim records its owner: ``<hostname>:<pid>:<boot id>``, the boot id
being random per process. When a desk starts, it looks at the owners of the leases still held:

* an owner on **this host** whose pid is not running (or is a zombie) is dead: its leases are
  expired now rather than in up to 60 seconds;
* an owner on this host with **our own pid** but another boot id is an earlier process that had
  our pid (a container restarting as pid 1, pid reuse): dead too, since we have not claimed
  anything yet and our boot id is new;
* an owner on **another host** is waited out, as before: we cannot see its processes (a later
  change adds heartbeats for that).

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

import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.outbound import Outbound
from bot.rules import Rules
from bot.tickets import Desk, queue_effects
from storage.models import Message, OutboxRow, Ticket
from storage.queues import expire_inbox_leases, open_leases, outbox_held_by

log = logging.getLogger("deskbot.leases")

UNKNOWN_OUTCOME = "outcome unknown after a crash; not re-sent to avoid a duplicate"
CUSTOMER_CHANNELS = ("telegram", "whatsapp")

_boot_id = secrets.token_hex(4)
_boot_pid = os.getpid()


def _host() -> str:
    return socket.gethostname()[:80] or "localhost"


def this_process() -> str:
    """This process's lease owner id: ``host:pid:boot id`` (a new boot id after a fork)."""
    global _boot_id, _boot_pid
    if os.getpid() != _boot_pid:
        _boot_id, _boot_pid = secrets.token_hex(4), os.getpid()
    return f"{_host()}:{_boot_pid}:{_boot_id}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:  # a killed process its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def is_dead(owner: str) -> bool:
    """True only when ``owner`` is certainly a process of this host that no longer runs."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # not ours to judge (an older desk, or another scheme)
    host, pid = parts[0], int(parts[1])
    if host != _host() or owner == this_process():
        return False
    if pid == os.getpid():
        return True  # our pid, another boot id: an earlier process that had our pid
    return not _running(pid)


@dataclass
class Reclaimed:
    owners: list[str]
    inbox: int = 0
    outbox: int = 0
    unknown: int = 0  # desk notices not sent again
    resent_replies: int = 0


def _is_desk_notice(out: Outbound, message: Message | None) -> bool:
    """A message the desk wrote itself to a customer, as opposed to an agent's reply."""
    if out.channel not in CUSTOMER_CHANNELS or out.kind != "text":
        return False
    if message is None:
        return True  # only agents' replies are linked to a ticket message
    return message.purpose is not None or message.author == "desk"


def _quote(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return f'"{text if len(text) <= limit else text[: limit - 1] + "…"}"'


async def reclaim_dead_leases(
    sessions: async_sessionmaker[AsyncSession], rules: Rules, now: datetime
) -> Reclaimed:
    """At start-up: take over at once what this host's dead desks had claimed."""
    async with sessions.begin() as session:
        owners = sorted(o for o in await open_leases(session) if is_dead(o))
        done = Reclaimed(owners)
        if not owners:
            return done
        # Ran out a moment ago: claimable by the very next claim, even under a frozen test clock.
        expired = now - timedelta(seconds=1)
        done.inbox = await expire_inbox_leases(session, owners, expired)
        for row in await outbox_held_by(session, owners):
            await _settle_unknown_send(session, rules, now, row, done, expired)
    log.info(
        "leases.reclaimed owners=%s inbox=%d outbox=%d not_resent=%d resent_replies=%d",
        ",".join(owners),
        done.inbox,
        done.outbox,
        done.unknown,
        done.resent_replies,
    )
    return done


async def _settle_unknown_send(
    session: AsyncSession,
    rules: Rules,
    now: datetime,
    row: OutboxRow,
    done: Reclaimed,
    expired: datetime,
) -> None:
    """A row that was ``sending`` when its process died: the platform may or may not have it."""
    out = Outbound.model_validate(row.payload)
    message = await session.get(Message, row.message_id) if row.message_id else None
    ticket = await session.get(Ticket, row.ticket_id) if row.ticket_id else None
    desk = Desk(session, rules, now)
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
            desk.thread(
                ticket,
                f"⚠️ The desk restarted while sending this to the customer: {_quote(out.text)}. "
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
    await queue_effects(session, desk, f"reclaim:{row.id}")
