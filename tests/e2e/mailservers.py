"""Real mail servers on loopback for the email tests.

* :class:`Dovecot`: Debian's ``dovecot-imapd`` started with a throwaway configuration (its own
  folder, a loopback port, plain-text login, IDLE on inotify), with one mailbox per test.
  Mail is put in with IMAP ``APPEND`` (as a mail server's delivery would put it there) and read
  back to check flags.
* :class:`SmtpSink`: an ``aiosmtpd`` server that checks the desk's login and keeps every mail.

Skipped (not failed) when dovecot is not installed outside CI; ``.ci/run`` installs it.
"""

from __future__ import annotations

import imaplib
import itertools
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from sandbox.ports import free_port as _free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PASSWORD = "mail-test-secret"
USERS = 100  # mailboxes made up front; each test (on each database) takes its own


def dovecot_available() -> bool:
    return os.path.exists(DOVECOT)


@dataclass
class Dovecot:
    root: Path
    port: int = field(default_factory=_free_port)
    # TLS: a certificate and key (PEM) turn on STARTTLS on ``port`` and implicit TLS on
    # ``tls_port``, and refuse a password before TLS (so a login proves the upgrade happened).
    cert: Path | None = None
    key: Path | None = None
    tls_port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    _next: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self) -> None:
        root = self.root
        for sub in ("run", "state", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:  # dovecot never opens mail as root
            owner = pwd.getpwnam("nobody")
            uid, gid = owner.pw_uid, owner.pw_gid
            os.chmod(root, 0o755)
            os.chown(root / "home", uid, gid)
        else:
            uid, gid = os.getuid(), os.getgid()
        users = "".join(
            f"t{n}@example.com:{{PLAIN}}{PASSWORD}::::::\n" for n in range(1, USERS + 1)
        )
        (root / "users").write_text(users)
        me = pwd.getpwuid(os.getuid()).pw_name
        if self.cert is not None and self.key is not None:
            tls = (
                f"ssl = required\nssl_cert = <{self.cert}\nssl_key = <{self.key}\n"
                "disable_plaintext_auth = yes\n"
            )
            imaps = f"address = 127.0.0.1\n    port = {self.tls_port}"
        else:
            tls = "ssl = no\ndisable_plaintext_auth = no\n"
            imaps = "port = 0"
        (root / "dovecot.conf").write_text(
            f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = desk-test-{self.port}
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
{tls}auth_mechanisms = plain login
first_valid_uid = {uid}
default_login_user = {"dovenull" if os.getuid() == 0 else me}
default_internal_user = {"dovecot" if os.getuid() == 0 else me}
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
mailbox_idle_check_interval = 1 secs
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""
        )
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"dovecot did not start: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("dovecot did not listen in 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def new_user(self) -> str:
        n = next(self._next)
        assert n <= USERS, "more mail tests than mailboxes: raise USERS"
        return f"t{n}@example.com"

    def url(self, user: str) -> str:
        return f"imap://{user.replace('@', '%40')}:{PASSWORD}@127.0.0.1:{self.port}/INBOX"

    def _imap(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(user, PASSWORD)
        return client

    def deliver(self, user: str, mail: bytes | EmailMessage, *, seen: bool = False) -> None:
        """Put a mail into the user's INBOX, as the mail server would on delivery."""
        data = mail if isinstance(mail, bytes) else mail.as_bytes()
        client = self._imap(user)
        try:
            client.append("INBOX", "(\\Seen)" if seen else "", None, data)
        finally:
            client.logout()

    def deliver_tls(self, user: str, mail: bytes | EmailMessage, context: ssl.SSLContext) -> None:
        """Put a mail into a TLS Dovecot's INBOX, over implicit TLS."""
        data = mail if isinstance(mail, bytes) else mail.as_bytes()
        client = imaplib.IMAP4_SSL("127.0.0.1", self.tls_port, ssl_context=context, timeout=10)
        try:
            client.login(user, PASSWORD)
            client.append("INBOX", "", None, data)
        finally:
            client.logout()

    def flags(self, user: str) -> list[tuple[int, bool]]:
        """(uid, seen) of every mail in the user's INBOX."""
        client = self._imap(user)
        try:
            client.select("INBOX", readonly=True)
            _, data = client.uid("FETCH", "1:*", "(UID FLAGS)")
            found: list[tuple[int, bool]] = []
            for line in data:
                if not isinstance(line, bytes):
                    continue
                text = line.decode()
                if "UID " not in text:
                    # An unsolicited FETCH (FLAGS only) about a change the desk's own session
                    # made meanwhile: the mail's own line, with its UID, is in the answer too.
                    continue
                uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
                found.append((uid, "\\Seen" in text))
            return sorted(found)
        finally:
            client.logout()

    def kick(self, user: str) -> None:
        """Drop the user's IMAP connections, as a server restart or a network blip would."""
        subprocess.run(
            ["doveadm", "-c", str(self.root / "dovecot.conf"), "kick", user],
            check=False,
            capture_output=True,
        )


class _Keeper:
    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        msg = message_from_bytes(data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.mails.append(msg)
        self.envelopes.append((str(envelope.mail_from), [str(r) for r in envelope.rcpt_tos]))
        return "250 OK"


class SmtpSink:
    """An SMTP server that asks for the desk's login and keeps what it is given."""

    def __init__(self, user: str, password: str = PASSWORD) -> None:
        self.port = _free_port()
        self.user = user
        self.password = password
        self.keeper = _Keeper()

        def authenticate(
            server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (
                data.login.decode() == self.user and data.password.decode() == self.password
            )
            return AuthResult(success=ok)

        self.controller = Controller(
            self.keeper,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_require_tls=False,
        )

    @property
    def mails(self) -> list[EmailMessage]:
        return self.keeper.mails

    def url(self) -> str:
        return f"smtp://{self.user.replace('@', '%40')}:{self.password}@127.0.0.1:{self.port}"

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
