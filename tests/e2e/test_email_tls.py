"""The email channel's TLS: ``imap://`` upgrades with STARTTLS when the server offers it (here a
Dovecot that refuses a password before TLS, so a login proves the upgrade), ``imaps://`` is TLS
from the first byte, and a certificate the desk does not trust stops the connection."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.email.imap import MailboxReader
from bot.base.settings import mail_server

from .mailservers import PASSWORD, Dovecot, dovecot_available
from .test_email import IN_CI, mail


@pytest.fixture(scope="module")
def tls_dovecot() -> Iterator[Dovecot]:
    if not dovecot_available() or shutil.which("openssl") is None:
        if IN_CI:
            pytest.fail("CI=true but dovecot or openssl is missing")
        pytest.skip("dovecot-imapd or openssl is not installed")
    root = Path(tempfile.mkdtemp(prefix="desk-dovecot-tls-"))
    root.chmod(0o755)
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    key.chmod(0o644)  # read by dovecot's own user
    server = Dovecot(root, cert=cert, key=key)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _trusting(server: Dovecot) -> ssl.SSLContext:
    assert server.cert is not None
    return ssl.create_default_context(cafile=str(server.cert))


async def _read_one(server: Dovecot, url: str, context: ssl.SSLContext) -> list[bytes]:
    user = url.split("//")[1].split(":")[0].replace("%40", "@")
    server.deliver_tls(user, mail("over TLS", subject="TLS"), _trusting(server))
    took: list[bytes] = []
    got = asyncio.Event()

    async def take(_validity: int, _uid: int, raw: bytes) -> None:
        took.append(raw)
        got.set()

    async def never(_key: str) -> tuple[int, int] | None:
        return None

    async def nowhere(_key: str, _validity: int, _uid: int) -> None:
        return None

    reader = MailboxReader(
        mail_server("DESK_EMAIL_IMAP_URL", url),
        take=take,
        last_read=never,
        advance=nowhere,
        poll_seconds=5,
        timeout=5,
        ssl_context=context,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(reader.run(stop))
    try:
        await asyncio.wait_for(got.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return took


async def test_imap_url_upgrades_with_starttls(tls_dovecot: Dovecot) -> None:
    user = tls_dovecot.new_user()
    url = f"imap://{user.replace('@', '%40')}:{PASSWORD}@127.0.0.1:{tls_dovecot.port}/INBOX"
    [raw] = await _read_one(tls_dovecot, url, _trusting(tls_dovecot))
    assert b"over TLS" in raw


async def test_imaps_url_is_tls_from_the_first_byte(tls_dovecot: Dovecot) -> None:
    user = tls_dovecot.new_user()
    url = f"imaps://{user.replace('@', '%40')}:{PASSWORD}@127.0.0.1:{tls_dovecot.tls_port}/INBOX"
    [raw] = await _read_one(tls_dovecot, url, _trusting(tls_dovecot))
    assert b"over TLS" in raw


async def test_an_untrusted_certificate_stops_the_connection(tls_dovecot: Dovecot) -> None:
    user = tls_dovecot.new_user()
    url = f"imaps://{user.replace('@', '%40')}:{PASSWORD}@127.0.0.1:{tls_dovecot.tls_port}/INBOX"
    with pytest.raises(TimeoutError):  # never read: the reader retries, failing each time
        await _read_one(tls_dovecot, url, ssl.create_default_context())
