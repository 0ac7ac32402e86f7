"""The IMAP side of the email channel: one connection that reads the mailbox with IDLE (or by
polling where the server has no IDLE), reconnecting with backoff when it drops.

Each new mail is, in this order: fetched without being marked read (``BODY.PEEK[]``), parsed,
written to the inbox (deduplicated on its Message-ID), flagged ``\\Seen`` on the server, and its
UID recorded as read (:class:`bot.mail.store.MailStore`). A crash or a dropped connection
anywhere in between means the mail is fetched again and the inbox drops the copy: nothing is
skipped, nothing doubled. On the first start (or after UIDVALIDITY changed) the unseen mail is
read, then everything that arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aioimaplib

from bot.base.settings import MailServer

log = logging.getLogger("deskbot.adapters.email")

UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
FETCH_UID = re.compile(rb"UID (\d+)")
BATCH = 50  # mails fetched per sync before the IDLE resumes (the rest in the next round)


class ImapError(Exception):
    """The server said NO/BAD, or the connection is gone: reconnect."""


# (uid, raw bytes) → written to the inbox; raises to leave the mail unseen and retry.
Take = Callable[[int, int, bytes], Awaitable[None]]


def _ok(response: Any, what: str) -> Any:
    if response.result != "OK":
        said = b" ".join(line for line in response.lines if isinstance(line, bytes))[:200]
        raise ImapError(f"{what}: {response.result} {said.decode('utf-8', 'replace')}")
    return response


class MailboxReader:
    """Reads one mailbox into ``take`` until stopped."""

    def __init__(
        self,
        server: MailServer,
        *,
        take: Take,
        last_read: Callable[[str], Awaitable[tuple[int, int] | None]],
        advance: Callable[[str, int, int], Awaitable[None]],
        poll_seconds: float,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._server = server
        self._take = take
        self._last_read = last_read
        self._advance = advance
        self._poll = poll_seconds
        self._timeout = timeout
        self._ssl = ssl_context
        self._client: aioimaplib.IMAP4 | None = None
        self._lost = asyncio.Event()
        self.connected = False
        self.key = f"{server.user}@{server.host}/{server.mailbox}"
        self.idle = False  # whether the server offered IDLE on the last connection
        self.syncs = 0  # finished sync rounds (tests wait on it)
        self.failing: str | None = None  # the last error, until a connection works again

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                await self._session(stop)
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = False
                self.failing = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.warning(
                    "email.imap_failed host=%s error=%s: %s retry_in=%.0fs",
                    self._server.host,
                    type(exc).__name__,
                    str(exc)[:200],
                    backoff,
                )
            finally:
                await self._close()
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 60.0)

    async def _close(self) -> None:
        client, self._client = self._client, None
        self.connected = False
        if client is None:
            return
        if not self._lost.is_set():  # a dead connection has nobody to say goodbye to
            try:
                if client.has_pending_idle():
                    client.idle_done()
                await asyncio.wait_for(client.logout(), 3)
            except Exception:
                pass
        transport = client.protocol.transport if client.protocol is not None else None
        if transport is not None:
            transport.close()

    async def _call(self, command: Awaitable[Any]) -> Any:
        """A command's answer, or ImapError as soon as the connection is gone (aioimaplib
        would wait out its timeout on a dead connection)."""
        task = asyncio.ensure_future(command)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not task.done():
            task.cancel()
            raise ImapError("connection lost")
        return task.result()

    def _on_lost(self, exc: Exception | None) -> None:
        self._lost.set()
        client = self._client
        if client is not None and client.protocol is not None:
            # Wake a waiting IDLE at once rather than at its timeout.
            client.protocol.idle_queue.put_nowait(aioimaplib.STOP_WAIT_SERVER_PUSH)

    async def _connect(self) -> aioimaplib.IMAP4:
        server = self._server
        self._lost = asyncio.Event()
        client: aioimaplib.IMAP4
        if server.tls == "implicit":
            client = aioimaplib.IMAP4_SSL(
                server.host, server.port, timeout=self._timeout, ssl_context=self._ssl
            )
            client.protocol.conn_lost_cb = self._on_lost
        else:
            client = aioimaplib.IMAP4(
                server.host, server.port, timeout=self._timeout, conn_lost_cb=self._on_lost
            )
        self._client = client
        await client.wait_hello_from_server()
        if server.tls == "starttls" and client.has_capability("STARTTLS"):
            await self._starttls(client)
        _ok(await self._call(client.login(server.user, server.password)), "LOGIN")
        return client

    async def _starttls(self, client: aioimaplib.IMAP4) -> None:
        """aioimaplib has no STARTTLS of its own: the command, then the connection upgraded in
        place (asyncio's start_tls), then the capabilities asked again as RFC 3501 requires."""
        protocol = client.protocol
        response = await asyncio.wait_for(
            protocol.execute(
                aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
            ),
            self._timeout,
        )
        _ok(response, "STARTTLS")
        context = self._ssl or ssl.create_default_context()
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            protocol.transport, protocol, context, server_hostname=self._server.host
        )
        protocol.transport = transport
        await asyncio.wait_for(protocol.capability(), self._timeout)
        log.info("email.imap_starttls host=%s", self._server.host)

    async def _session(self, stop: asyncio.Event) -> None:
        client = await self._connect()
        selected = _ok(
            await self._call(client.select(self._quoted(self._server.mailbox))), "SELECT"
        )
        uidvalidity, uidnext = 0, 0
        for line in selected.lines:
            if isinstance(line, bytes | bytearray):
                if m := UIDVALIDITY.search(line):
                    uidvalidity = int(m.group(1))
                if m := UIDNEXT.search(line):
                    uidnext = int(m.group(1))
        if not uidvalidity:
            raise ImapError("the server gave no UIDVALIDITY")
        self.connected = True
        self.failing = None
        self.idle = client.has_capability("IDLE")
        log.info(
            "email.imap_connected host=%s mailbox=%s idle=%s",
            self._server.host,
            self._server.mailbox,
            self.idle,
        )
        while not stop.is_set():
            more = await self._sync(client, uidvalidity, uidnext)
            uidnext = 0
            self.syncs += 1
            if more:
                continue
            await self._wait(client, stop)
            if self._lost.is_set():
                raise ImapError("connection lost")

    @staticmethod
    def _quoted(mailbox: str) -> str:
        if re.fullmatch(r"[A-Za-z0-9._/-]+", mailbox):
            return mailbox
        return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'

    async def _wait(self, client: aioimaplib.IMAP4, stop: asyncio.Event) -> None:
        """Until the server says something changed (IDLE), the poll interval passes, or stop."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            if self.idle:
                idle = await client.idle_start(timeout=self._poll)
                push = asyncio.ensure_future(client.wait_server_push(timeout=self._poll + 5))
                await asyncio.wait({push, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not push.done():
                    push.cancel()
                if self._lost.is_set():
                    raise ImapError("connection lost")
                if client.has_pending_idle():
                    client.idle_done()
                await self._call(asyncio.wait_for(idle, self._timeout))
            else:
                await asyncio.wait({stopping}, timeout=self._poll)
                if not stop.is_set():
                    _ok(await self._call(client.noop()), "NOOP")
        finally:
            stopping.cancel()

    async def _search(self, client: aioimaplib.IMAP4, *criteria: str) -> list[int]:
        response = _ok(await self._call(client.uid_search(*criteria, charset=None)), "UID SEARCH")
        uids: list[int] = []
        for line in response.lines[:-1]:  # the last line is the server's "completed" text
            if isinstance(line, bytes | bytearray):
                uids.extend(int(w) for w in line.split() if w.isdigit())
        return uids

    async def _sync(self, client: aioimaplib.IMAP4, uidvalidity: int, uidnext: int) -> bool:
        """Take every mail not yet read; True when more are left than one batch took."""
        state = await self._last_read(self.key)
        if state is None or state[0] != uidvalidity:
            # First start (or the UIDs were renumbered): the unseen mail, all of it, then the
            # count starts after the newest; mail read by people before the desk is theirs.
            uids = sorted(await self._search(client, "UNSEEN"))
            log.info(
                "email.first_read mailbox=%s unseen=%d (%s)",
                self._server.mailbox,
                len(uids),
                "first start" if state is None else "UIDVALIDITY changed",
            )
            for uid in uids:
                await self._read(client, uidvalidity, uid)
            await self._advance(self.key, uidvalidity, max([uidnext - 1, *uids, 0]))
            return False
        last = state[1]
        uids = sorted(u for u in await self._search(client, "UID", f"{last + 1}:*") if u > last)
        for uid in uids[:BATCH]:
            await self._read(client, uidvalidity, uid)
            await self._advance(self.key, uidvalidity, uid)
        return len(uids) > BATCH

    async def _read(self, client: aioimaplib.IMAP4, uidvalidity: int, uid: int) -> None:
        """One mail: fetched unread, into the inbox (committed), then flagged \\Seen."""
        raw = await self._fetch(client, uid)
        if raw is None:
            return  # expunged meanwhile
        await self._take(uidvalidity, uid, raw)
        _ok(
            await self._call(client.uid("store", str(uid), "+FLAGS.SILENT", r"(\Seen)")),
            "STORE",
        )

    async def _fetch(self, client: aioimaplib.IMAP4, uid: int) -> bytes | None:
        """A mail's bytes, without setting \\Seen; None when it was expunged meanwhile."""
        response = _ok(
            await self._call(client.uid("fetch", str(uid), "(UID BODY.PEEK[])")), "UID FETCH"
        )
        for line in response.lines:
            if isinstance(line, bytearray):
                return bytes(line)
        return None

    async def fetch_one(self, uidvalidity: int, uid: int) -> bytes:
        """One mail's bytes on a short connection of its own (an attachment the outbox relays
        to Slack); LookupError when the mailbox was renumbered or the mail is gone."""
        try:
            client = await self._connect()
            # SELECT, not EXAMINE (aioimaplib allows UID commands only once selected); the
            # fetch is a PEEK, so nothing changes in the mailbox.
            selected = _ok(await client.select(self._quoted(self._server.mailbox)), "SELECT")
            validity = next(
                (
                    int(m.group(1))
                    for line in selected.lines
                    if isinstance(line, bytes | bytearray) and (m := UIDVALIDITY.search(line))
                ),
                0,
            )
            if validity != uidvalidity:
                raise LookupError("the mailbox was renumbered (UIDVALIDITY) since the mail came")
            raw = await self._fetch(client, uid)
            if raw is None:
                raise LookupError("the mail is no longer in the mailbox")
            return raw
        finally:
            await self._close()
