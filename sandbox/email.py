"""A loopback support mailbox for the sandbox: an IMAP server the desk reads and an SMTP server
the desk sends through, both in-process, so the desk's real email adapter (aioimaplib and
aiosmtplib, adapters/email/) talks to them unchanged.

The SMTP side is aiosmtpd (a runtime dependency for this reason). The IMAP side is written here,
and only the subset the desk's reader uses: CAPABILITY, LOGIN, SELECT/EXAMINE (with
UIDVALIDITY and UIDNEXT), UID SEARCH (ALL, UNSEEN, SEEN, a UID set), UID FETCH of the whole
message (BODY.PEEK[] or BODY[]), UID STORE of flags, IDLE/DONE, NOOP, LOGOUT. It is
hand-written, deliberately: the one asyncio IMAP server on PyPI, ``pymap`` (last release 0.36.7,
April 2024, one maintainer), would bring a second dependency tree (pysasl, proxy-protocol, its
plugin machinery) into every install for a demo, and Twisted's ``twisted.mail.imap4`` would
bring Twisted; the other Python IMAP packages are clients (imaplib, aioimaplib, imapclient). The
subset is small, and tests/sandbox/test_email_standin.py holds it to what the real adapter does.

What it does not imitate: STARTTLS or TLS (loopback only, plain text), more than one mailbox
(folders), EXPUNGE and message sequence numbers changing, partial fetches, BODYSTRUCTURE,
server-side search beyond the criteria above, and mail delivery: nothing the desk sends leaves
the machine; it is kept in :attr:`EmailStandIn.sent`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import logging
import re
import secrets
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ._common import Waiter

log = logging.getLogger("sandbox")


class _ChosenNoise(logging.Filter):
    """aiosmtpd's two warnings on every mail the desk sends, which tell a sandbox user nothing:
    AUTH without TLS (chosen: the server listens on loopback, with a made-up password), and
    its own use of ``Session.login_data`` after each login (aiosmtpd 1.4 sets the deprecated
    attribute itself). Its other messages pass."""

    QUIET = (
        "auth_required == True but auth_require_tls == False",
        "Session.login_data is deprecated and will be removed in version 2.0",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.QUIET


logging.getLogger("mail.log").addFilter(_ChosenNoise())

SUPPORT_ADDRESS = "support@example.com"
TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|\([^)]*\)|\S+')
MAX_LINE = 64 * 1024


@dataclass
class Mail:
    uid: int
    raw: bytes
    seen: bool = False
    at: float = field(default_factory=time.time)
    shown: dict[str, Any] | None = None  # summary(), parsed once (the page asks every second)


def _unquote(token: bytes) -> str:
    text = token.decode("utf-8", "replace")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _uid_set(spec: str, highest: int) -> set[int] | None:
    """``1,3:5,7:*`` as UIDs (``*`` is the highest UID there is); None when malformed."""
    found: set[int] = set()
    for part in spec.split(","):
        low_raw, _, high_raw = part.partition(":")
        ends = []
        for raw in (low_raw, high_raw or low_raw):
            if raw == "*":
                ends.append(highest)
            elif raw.isdigit():
                ends.append(int(raw))
            else:
                return None
        low, high = min(ends), max(ends)
        found.update(range(low, min(high, highest) + 1))
    return found


def summary(msg: EmailMessage) -> dict[str, Any]:
    """What the page shows of one mail: the headers that matter for threading, and the text."""
    body = msg.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    return {
        "message_id": str(msg.get("Message-ID", "")).strip(),
        "from": str(msg.get("From", "")),
        "to": str(msg.get("To", "")),
        "subject": str(msg.get("Subject", "")),
        "date": str(msg.get("Date", "")),
        "in_reply_to": str(msg.get("In-Reply-To", "")).strip(),
        "references": str(msg.get("References", "")).split(),
        "auto_submitted": str(msg.get("Auto-Submitted", "")),
        "text": text.strip() if isinstance(text, str) else "",
        "attachments": [p.get_filename() or "attachment" for p in msg.iter_attachments()],
    }


class EmailStandIn:
    """One mailbox (the desk's INBOX, on IMAP) and one outgoing server (SMTP) on loopback."""

    def __init__(self, address: str = SUPPORT_ADDRESS) -> None:
        self.address = address
        self.user = address
        self.password = secrets.token_urlsafe(18)
        self.uidvalidity = int(time.time())
        self.uidnext = 1
        self.mailbox: list[Mail] = []
        # What the desk sent, oldest first: summary() of each, with "at" (when it came).
        self.sent: list[dict[str, Any]] = []
        self._changed = Waiter()
        self._idlers: set[asyncio.StreamWriter] = set()
        self._imap: asyncio.Server | None = None
        self._smtp: asyncio.AbstractServer | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self.host = "127.0.0.1"
        self.imap_port = 0
        self.smtp_port = 0
        self.logins = 0  # IMAP logins that succeeded (tests wait for the desk to connect)

    # -- what the desk is told -------------------------------------------------------------------

    def imap_url(self) -> str:
        user = self.user.replace("@", "%40")
        return f"imap://{user}:{self.password}@{self.host}:{self.imap_port}/INBOX"

    def smtp_url(self) -> str:
        user = self.user.replace("@", "%40")
        return f"smtp://{user}:{self.password}@{self.host}:{self.smtp_port}"

    # -- the customer side -----------------------------------------------------------------------

    def find_sent(self, message_id: str) -> dict[str, Any] | None:
        wanted = message_id.strip().strip("<>")
        return next((m for m in self.sent if m["message_id"].strip("<>") == wanted), None)

    async def customer_writes(
        self,
        sender: str,
        text: str,
        *,
        name: str = "",
        subject: str = "",
        in_reply_to: str | None = None,
    ) -> dict[str, Any]:
        """A customer's mail lands in the support mailbox. ``in_reply_to``: the Message-ID of
        a mail the desk sent; the reply then threads (In-Reply-To, References, ``Re:`` subject)
        and quotes that mail below the new text, as mail programs do."""
        msg = EmailMessage()
        msg["From"] = formataddr((name, sender)) if name else sender
        msg["To"] = self.address
        msg["Date"] = format_datetime(email.utils.localtime())
        msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "customer.test")
        body = text
        if in_reply_to:
            answered = self.find_sent(in_reply_to)
            if answered is None:
                raise ValueError(f"the desk sent no mail with Message-ID {in_reply_to}")
            msg["In-Reply-To"] = answered["message_id"]
            msg["References"] = " ".join([*answered["references"], answered["message_id"]])
            subject = subject or answered["subject"]
            if not subject.lower().startswith("re:"):
                subject = f"Re: {subject}"
            quoted = "\n".join(f"> {line}" for line in answered["text"].splitlines())
            body = f"{text}\n\nOn {answered['date']}, {answered['from']} wrote:\n{quoted}\n"
        msg["Subject"] = subject or "(no subject)"
        msg.set_content(body)
        uid = await self.deliver(msg.as_bytes(policy=email.policy.SMTP))
        return {"message_id": str(msg["Message-ID"]), "uid": uid, "subject": str(msg["Subject"])}

    async def deliver(self, raw: bytes) -> int:
        """Any mail into the mailbox, unseen; an IDLE-ing desk hears of it at once."""
        uid = self.uidnext
        self.uidnext += 1
        self.mailbox.append(Mail(uid, raw))
        exists = f"* {len(self.mailbox)} EXISTS\r\n".encode()
        for writer in list(self._idlers):
            with contextlib.suppress(Exception):
                writer.write(exists)
        await self._changed.notify()
        return uid

    def received(self) -> list[dict[str, Any]]:
        """The mailbox, oldest first, as the page shows it (with whether the desk read it)."""
        out = []
        for mail in self.mailbox:
            if mail.shown is None:
                msg = email.message_from_bytes(mail.raw, policy=email.policy.default)
                assert isinstance(msg, EmailMessage)
                mail.shown = summary(msg)
            out.append({**mail.shown, "uid": mail.uid, "seen": mail.seen, "at": mail.at})
        return out

    def sent_to(self, address: str) -> list[dict[str, Any]]:
        wanted = address.strip().lower()
        return [m for m in self.sent if parseaddr(m["to"])[1].lower() == wanted]

    async def wait_sent(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        await self._changed.wait_for(lambda: len(self.sent) >= n, timeout)
        return self.sent

    # -- state across sandbox restarts -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "uidvalidity": self.uidvalidity,
            "uidnext": self.uidnext,
            "mailbox": [
                {"uid": m.uid, "raw": base64.b64encode(m.raw).decode(), "seen": m.seen, "at": m.at}
                for m in self.mailbox
            ],
            "sent": self.sent,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        self.uidvalidity = int(state.get("uidvalidity") or self.uidvalidity)
        self.mailbox = [
            Mail(int(m["uid"]), base64.b64decode(m["raw"]), bool(m["seen"]), float(m["at"]))
            for m in state.get("mailbox", [])
        ]
        self.uidnext = max([int(state.get("uidnext") or 1), *(m.uid + 1 for m in self.mailbox)])
        self.sent = list(state.get("sent", []))

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._imap = await asyncio.start_server(self._imap_session, host, 0, limit=MAX_LINE)
        self.imap_port = int(self._imap.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        self._smtp = await loop.create_server(self._smtp_protocol, host, 0)
        self.smtp_port = int(self._smtp.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for server in (self._imap, self._smtp):
            if server is not None:
                server.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        self._imap = self._smtp = None

    # -- SMTP (aiosmtpd) -------------------------------------------------------------------------

    def _smtp_protocol(self) -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns that AUTH without TLS is unsafe: this server listens on loopback
            # only, with a made-up password, as the sandbox's whole point is no real accounts.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return SMTP(
                self,
                hostname="sandbox-smtp",
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=False,
            )

    def _authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (
            data.login.decode() == self.user and data.password.decode() == self.password
        )
        return AuthResult(success=ok)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.sent.append({**summary(msg), "rcpt": list(envelope.rcpt_tos), "at": time.time()})
        await self._changed.notify()
        return "250 OK kept by the sandbox"

    # -- IMAP (the subset the desk's reader uses) ------------------------------------------------

    async def _imap_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await _ImapSession(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._idlers.discard(writer)
            self._sessions.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


CAPABILITIES = "IMAP4rev1 IDLE LITERAL+ AUTH=PLAIN"


class _ImapSession:
    def __init__(
        self, box: EmailStandIn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.box = box
        self.reader = reader
        self.writer = writer
        self.authenticated = False
        self.selected = False
        self.read_only = False

    def say(self, line: str | bytes) -> None:
        self.writer.write((line.encode() if isinstance(line, str) else line) + b"\r\n")

    async def run(self) -> None:
        self.say(f"* OK [CAPABILITY {CAPABILITIES}] deskbot sandbox IMAP ready")
        while True:
            line = await self.reader.readline()
            if not line:
                return
            line = line.rstrip(b"\r\n")
            # A literal argument ({n} or {n+}): read it and splice it in as a quoted string.
            while m := re.search(rb"\{(\d+)(\+?)\}$", line):
                if not m.group(2):
                    self.say("+ go ahead")
                    await self.writer.drain()
                data = await self.reader.readexactly(int(m.group(1)))
                rest = (await self.reader.readline()).rstrip(b"\r\n")
                escaped = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
                line = line[: m.start()] + b'"' + escaped + b'"' + rest
            tokens = TOKEN.findall(line)
            if len(tokens) < 2:
                self.say(b"* BAD a command is a tag and a name")
                continue
            tag, name, args = tokens[0].decode(), tokens[1].decode().upper(), tokens[2:]
            if name == "UID" and args:
                name, args = "UID " + args[0].decode().upper(), args[1:]
            if not await self.command(tag, name, args):
                await self.writer.drain()
                return
            await self.writer.drain()

    async def command(self, tag: str, name: str, args: list[bytes]) -> bool:
        """Answer one command; False to close the connection."""
        box = self.box
        if name == "CAPABILITY":
            self.say(f"* CAPABILITY {CAPABILITIES}")
        elif name == "NOOP":
            pass
        elif name == "LOGOUT":
            self.say("* BYE the sandbox says goodbye")
            self.say(f"{tag} OK LOGOUT completed")
            return False
        elif name == "LOGIN":
            if len(args) != 2:
                self.say(f"{tag} BAD LOGIN takes a user and a password")
                return True
            if _unquote(args[0]) != box.user or _unquote(args[1]) != box.password:
                self.say(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.")
                return True
            self.authenticated = True
            box.logins += 1
            self.say(f"{tag} OK [CAPABILITY {CAPABILITIES}] Logged in")
            return True
        elif not self.authenticated:
            self.say(f"{tag} BAD log in first")
            return True
        elif name in ("SELECT", "EXAMINE"):
            if not args or _unquote(args[0]).upper() != "INBOX":
                self.say(f"{tag} NO [NONEXISTENT] the sandbox has only INBOX")
                return True
            self.selected, self.read_only = True, name == "EXAMINE"
            self.say(r"* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)")
            self.say(f"* {len(box.mailbox)} EXISTS")
            self.say("* 0 RECENT")
            self.say(f"* OK [UIDVALIDITY {box.uidvalidity}] UIDs valid")
            self.say(f"* OK [UIDNEXT {box.uidnext}] Predicted next UID")
            mode = "READ-ONLY" if self.read_only else "READ-WRITE"
            self.say(f"{tag} OK [{mode}] {name} completed")
            return True
        elif not self.selected:
            self.say(f"{tag} BAD select a mailbox first")
            return True
        elif name == "IDLE":
            await self.idle(tag)
            return True
        elif name == "UID SEARCH":
            self.search(tag, [_unquote(a) for a in args])
            return True
        elif name == "UID FETCH":
            self.fetch(tag, args)
            return True
        elif name == "UID STORE":
            self.store(tag, args)
            return True
        else:
            self.say(f"{tag} BAD the sandbox's IMAP does not know {name}")
            return True
        self.say(f"{tag} OK {name} completed")
        return True

    async def idle(self, tag: str) -> None:
        self.say("+ idling")
        await self.writer.drain()
        self.box._idlers.add(self.writer)
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    raise ConnectionError("the client went away while idling")
                if line.strip().upper() == b"DONE":
                    break
        finally:
            self.box._idlers.discard(self.writer)
        self.say(f"{tag} OK IDLE terminated")

    def _highest(self) -> int:
        return self.box.mailbox[-1].uid if self.box.mailbox else 0

    def search(self, tag: str, criteria: list[str]) -> None:
        mails = self.box.mailbox
        keys = [c.upper() for c in criteria]
        if keys[:1] == ["CHARSET"]:
            keys = keys[2:]
        found = list(mails)
        i = 0
        while i < len(keys):
            key = keys[i]
            if key == "ALL":
                pass
            elif key == "UNSEEN":
                found = [m for m in found if not m.seen]
            elif key == "SEEN":
                found = [m for m in found if m.seen]
            elif key == "UID" and i + 1 < len(keys):
                uids = _uid_set(keys[i + 1], self._highest())
                if uids is None:
                    self.say(f"{tag} BAD not a UID set: {keys[i + 1]}")
                    return
                found = [m for m in found if m.uid in uids]
                i += 1
            elif (uids := _uid_set(key, self._highest())) is not None:
                # A bare set is message sequence numbers; the sandbox never expunges, so
                # sequence number n is the n-th mail.
                found = [m for n, m in enumerate(found, start=1) if n in uids]
            else:
                self.say(f"{tag} BAD the sandbox's SEARCH does not know {key}")
                return
            i += 1
        self.say("* SEARCH" + "".join(f" {m.uid}" for m in found))
        self.say(f"{tag} OK SEARCH completed")

    def fetch(self, tag: str, args: list[bytes]) -> None:
        if len(args) < 2:
            self.say(f"{tag} BAD UID FETCH takes a UID set and items")
            return
        uids = _uid_set(args[0].decode(), self._highest())
        items = b" ".join(args[1:]).upper()
        if uids is None:
            self.say(f"{tag} BAD not a UID set")
            return
        whole = b"BODY[]" in items or b"BODY.PEEK[]" in items or b"RFC822" in items
        for n, mail in enumerate(self.box.mailbox, start=1):
            if mail.uid not in uids:
                continue
            if b"BODY[]" in items and not self.read_only:
                mail.seen = True  # BODY[] (not PEEK) reads it, as on a real server
            flags = r"(\Seen)" if mail.seen else "()"
            head = f"* {n} FETCH (UID {mail.uid} FLAGS {flags}"
            if whole:
                self.writer.write(f"{head} BODY[] {{{len(mail.raw)}}}\r\n".encode())
                self.writer.write(mail.raw)
                self.say(")")
            else:
                self.say(head + ")")
        self.say(f"{tag} OK FETCH completed")

    def store(self, tag: str, args: list[bytes]) -> None:
        if len(args) < 3 or self.read_only:
            self.say(f"{tag} BAD UID STORE takes a UID set, +FLAGS or -FLAGS, and flags")
            return
        uids = _uid_set(args[0].decode(), self._highest())
        how = args[1].decode().upper()
        seen = b"\\SEEN" in b" ".join(args[2:]).upper()
        if uids is None or how.removesuffix(".SILENT") not in ("+FLAGS", "-FLAGS", "FLAGS"):
            self.say(f"{tag} BAD not a UID set or a flags change")
            return
        for n, mail in enumerate(self.box.mailbox, start=1):
            if mail.uid in uids and seen:
                mail.seen = not how.startswith("-")
                if not how.endswith(".SILENT"):
                    flags = r"(\Seen)" if mail.seen else "()"
                    self.say(f"* {n} FETCH (UID {mail.uid} FLAGS {flags})")
        self.say(f"{tag} OK STORE completed")
        if self.box._changed.on_change is not None:
            self.box._changed.on_change()  # the state file keeps the \\Seen flags
