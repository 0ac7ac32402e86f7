"""Encryption at rest (storage/crypto.py): sealed values are authenticated and carry their key
id; without a key values pass through in clear; the key comes from DESK_DATA_KEY or its _FILE,
old keys from DESK_DATA_OLD_KEYS or a file of one a line; `deskbot check` says which."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.base.settings import SettingsError, load_settings
from storage import crypto
from storage.crypto import DataKeyError, Keyring
from storage.db import create_engine, migrate, session_factory
from storage.intake import Spool
from storage.models import Customer, Identity, InboxRow
from storage.queues import inbox_add

from .test_cli_check import ROOT, deskbot

KEY = crypto.new_key()
OLD = crypto.new_key()


# A wamid embeds the customer's number.
WAMID = "wamid.HBgLNDQ3NzAwOTAwMTIzFQIAEhgUM0E0QTY1OTlBRUUwMzgxMDE0NEYA"


def _whatsapp_row(
    external_id: str, payload: dict[str, object], raw: dict[str, object]
) -> dict[str, object]:
    """An inbox row of a WhatsApp customer's message, as the desk writes one."""
    return {
        "channel": "whatsapp",
        "external_id": external_id,
        "conversation": "whatsapp:447700900123",
        "kind": "customer_message",
        "payload": payload,
        "raw": raw,
        "status": "pending",
        "received_at": _now(),
    }


@pytest.fixture(autouse=True)
def no_keyring_after() -> Iterator[None]:
    yield
    crypto.install(None)


def test_a_sealed_value_names_its_key_and_opens_only_unaltered() -> None:
    ring = Keyring.of(KEY)
    sealed = ring.seal("Annabel, 5 Elm Street")
    assert sealed.startswith(f"dk1:{ring.key_id}:") and "Elm" not in sealed
    assert ring.seal("same") != ring.seal("same")  # a fresh nonce each time
    assert ring.open(sealed) == "Annabel, 5 Elm Street"
    body = sealed.rsplit(":", 1)[1]
    flipped = body[:20] + ("A" if body[20] != "A" else "B") + body[21:]
    with pytest.raises(DataKeyError, match="fails authentication: it was altered"):
        ring.open(sealed.rsplit(":", 1)[0] + ":" + flipped)
    # Another key's id on this ciphertext: the id is authenticated too.
    other = Keyring.of(OLD, [KEY])
    moved = sealed.replace(ring.key_id, other.key_id)
    with pytest.raises(DataKeyError, match="altered"):
        other.open(moved)
    with pytest.raises(DataKeyError, match="neither DESK_DATA_KEY nor in DESK_DATA_OLD_KEYS"):
        Keyring.of(OLD).open(sealed)
    assert Keyring.of(OLD, [KEY]).open(sealed) == "Annabel, 5 Elm Street"
    assert ring.open("stored in clear") == "stored in clear"


def test_the_keyring_reaches_the_report_worker_and_is_never_printed() -> None:
    """The report worker (bot/reports/offloop.py) is another process: the keyring is handed
    to it pickled, and opens there what the desk sealed; its repr shows no key."""
    old, new = crypto.new_key(), crypto.new_key()
    ring = Keyring.of(new, [old])
    sealed = Keyring.of(old).seal("my card number is 4111")
    copy = pickle.loads(pickle.dumps(ring))
    assert copy.key_id == ring.key_id and copy.old_ids == ring.old_ids
    assert copy.open(sealed) == "my card number is 4111"
    assert copy.open(ring.seal("hello")) == "hello"
    assert new not in repr(ring) and old not in repr(ring)


def test_a_bad_key_is_a_settings_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="DESK_DATA_KEY must be 32 bytes"):
        load_settings({"DESK_DATA_KEY": "c2hvcnQ"})
    with pytest.raises(SettingsError, match="DESK_DATA_OLD_KEYS is set without DESK_DATA_KEY"):
        load_settings({"DESK_DATA_OLD_KEYS": OLD})
    assert load_settings({}).data_keys is None and crypto.keyring() is None


def test_keys_come_from_files_and_old_keys_one_a_line(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    other = crypto.new_key()
    (tmp_path / "old").write_text(f"{OLD}\n{other}\n")
    settings = load_settings(
        {
            "DESK_DATA_KEY_FILE": str(tmp_path / "key"),
            "DESK_DATA_OLD_KEYS_FILE": str(tmp_path / "old"),
        }
    )
    ring = settings.data_keys
    assert ring is not None and ring.key_id == Keyring.of(KEY).key_id
    assert ring.old_ids == (Keyring.of(OLD).key_id, Keyring.of(other).key_id)
    assert crypto.keyring() is ring  # what the process reads and writes with
    commas = load_settings({"DESK_DATA_KEY": KEY, "DESK_DATA_OLD_KEYS": f"{OLD}, {other}"})
    assert commas.data_keys is not None and len(commas.data_keys.old_ids) == 2
    assert KEY not in repr(settings)


async def test_rows_are_sealed_with_a_key_and_read_back_either_way(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    async with sessions.begin() as s:  # before the key: in clear, as today
        s.add(Customer(name="Clara Clear", created_at=_now()))
    crypto.install(Keyring.of(KEY))
    async with sessions.begin() as s:
        s.add(Customer(name="Sam Sealed", note="", created_at=_now()))
        s.add(
            InboxRow(
                channel="telegram",
                external_id="1",
                conversation="c",
                kind="message",
                payload={"text": "my card 4111"},
                raw={"from": "Sam"},
                status="done",
                received_at=_now(),
            )
        )
    async with engine.connect() as conn:
        names = [n for (n,) in await conn.execute(text("SELECT name FROM customers ORDER BY id"))]
        payload = (await conn.execute(text("SELECT payload FROM inbox"))).scalar_one()
        note = (await conn.execute(text("SELECT note FROM customers WHERE id = 2"))).scalar_one()
    assert names[0] == "Clara Clear" and names[1].startswith("dk1:")
    assert "4111" not in str(payload) and "dk1:" in str(payload)
    assert note == ""  # an empty text stays empty: erased looks erased
    async with sessions() as s:
        assert list(await s.scalars(select(Customer.name).order_by(Customer.id))) == [
            "Clara Clear",
            "Sam Sealed",
        ]
        assert (await s.scalars(select(InboxRow.payload))).one() == {"text": "my card 4111"}
    # A sealed value altered in the database: the read fails, naming the key, never garbage.
    altered = names[1][:-6] + ("AAAAAA" if not names[1].endswith("AAAAAA") else "BBBBBB")
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE customers SET name = :v WHERE id = 2"), {"v": altered})
    async with sessions() as s:
        with pytest.raises(DataKeyError, match="fails authentication: it was altered"):
            await s.get(Customer, 2)
    crypto.install(None)  # the key removed while sealed data remains: loud, never garbage
    async with sessions() as s:
        with pytest.raises(DataKeyError, match="no DESK_DATA_KEY is set"):
            list(await s.scalars(select(Customer.name)))


def test_an_address_is_sealed_the_same_way_each_time_and_opens_back() -> None:
    ring = Keyring.of(KEY)
    sealed = ring.address("whatsapp:447700900123")
    assert sealed.startswith(f"da1:{ring.key_id}:") and "447700900123" not in sealed
    assert ring.address("whatsapp:447700900123") == sealed  # comparable by equality
    assert ring.address("whatsapp:447700900124") != sealed
    assert Keyring.of(OLD).address("whatsapp:447700900123") != sealed  # per key
    assert ring.open_address(sealed) == "whatsapp:447700900123"
    # Padded: a short and a longer address (within 32 bytes) look alike in length.
    assert len(ring.address("a@b.c")) == len(ring.address("anna.smith@example.org"))
    altered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(DataKeyError, match="altered"):
        ring.open_address(altered)
    with pytest.raises(DataKeyError, match="neither DESK_DATA_KEY"):
        Keyring.of(OLD).open_address(sealed)
    # The worker's copy (pickled) seals addresses alike.
    assert pickle.loads(pickle.dumps(ring)).address("whatsapp:447700900123") == sealed


async def test_addresses_are_found_under_every_key_still_read_and_in_clear(
    engine: AsyncEngine,
) -> None:
    """Identities stored in clear, under an old key and under the current one are all found
    by their address while the rotation has not reached them; Slack keys stay clear."""
    sessions = session_factory(engine)

    def ident(n: int, address: str) -> Identity:
        return Identity(customer_id=n, channel="whatsapp", external_id=address, chat_id=address)

    async with sessions.begin() as s:
        for n in (1, 2, 3):
            s.add(Customer(name=f"c{n}", created_at=_now()))
        s.add(ident(1, "447700900001"))  # no key yet: clear
    crypto.install(Keyring.of(OLD))
    async with sessions.begin() as s:
        s.add(ident(2, "447700900002"))
        s.add(
            InboxRow(
                channel="slack",
                external_id="e",
                conversation="slack:C1",
                kind="k",
                payload={},
                raw={},
                status="done",
                received_at=_now(),
            )
        )
    crypto.install(Keyring.of(KEY, [OLD]))
    async with sessions.begin() as s:
        s.add(ident(3, "447700900003"))
    async with engine.connect() as conn:
        stored = [
            v
            for (v,) in await conn.execute(
                text("SELECT external_id FROM identities ORDER BY customer_id")
            )
        ]
        conversation = (await conn.execute(text("SELECT conversation FROM inbox"))).scalar_one()
    assert stored[0] == "447700900001"
    assert stored[1].startswith(f"da1:{Keyring.of(OLD).key_id}:")
    assert stored[2].startswith(f"da1:{Keyring.of(KEY).key_id}:")
    assert conversation == "slack:C1"
    async with sessions() as s:
        for n in (1, 2, 3):
            address = f"44770090000{n}"
            found = await s.scalar(select(Identity).where(Identity.external_id == address))
            assert found is not None and (found.customer_id, found.chat_id) == (n, address)
        many = await s.scalars(
            select(Identity.customer_id).where(
                Identity.chat_id.in_(["447700900001", "447700900003"])
            )
        )
        assert sorted(many) == [1, 3]
        other = await s.scalars(
            select(Identity.customer_id).where(Identity.external_id != "447700900002")
        )
        assert sorted(other) == [1, 3]


async def test_a_redelivery_during_a_rotation_is_still_a_duplicate(engine: AsyncEngine) -> None:
    """A wamid embeds the customer's number, so the inbox's dedupe key is sealed too. Meta's
    retry of a webhook first stored under the old key is dropped while the rotation has not
    rewritten it yet (the unique key alone compares the new key's form and would let it in)."""
    sessions = session_factory(engine)
    wamid = WAMID

    def row(n: int) -> dict[str, object]:
        return _whatsapp_row(wamid, {"n": n}, {})

    crypto.install(Keyring.of(OLD))
    async with sessions.begin() as s:
        assert await inbox_add(s, [row(1)]) == 1
    crypto.install(Keyring.of(KEY, [OLD]))
    async with sessions.begin() as s:
        assert await inbox_add(s, [row(2)]) == 0
    async with engine.connect() as conn:
        [stored] = [v for (v,) in await conn.execute(text("SELECT external_id FROM inbox"))]
    assert stored.startswith(f"da1:{Keyring.of(OLD).key_id}:") and "HBgL" not in stored
    async with sessions() as s:
        [found] = (await s.scalars(select(InboxRow).where(InboxRow.external_id == wamid))).all()
        assert (found.external_id, found.payload) == (wamid, {"n": 1})


async def test_the_intake_spool_seals_what_it_keeps_and_knows_a_rotations_duplicate(
    tmp_path: Path,
) -> None:
    """SQLite's intake spool (storage/intake.py) holds a webhook's events until they are in the
    inbox: sealed as the inbox's rows are, and a redelivery of an event the inbox keeps under
    the old key is a duplicate there too."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}")
    await migrate(engine)
    sessions = session_factory(engine)
    wamid = WAMID

    def row(external_id: str, text: str) -> dict[str, object]:
        return _whatsapp_row(external_id, {"text": text}, {"text": text})

    crypto.install(Keyring.of(OLD))
    async with sessions.begin() as s:
        assert await inbox_add(s, [row(wamid, "hello")]) == 1
    crypto.install(Keyring.of(KEY, [OLD]))
    spool = Spool(tmp_path / "desk.db")
    try:
        assert spool.add([row(wamid, "hello")]) == 0  # Meta's retry during the rotation
        assert spool.add([row(wamid + "Mw", "my card number is 4111")]) == 1
        [(_, kept)] = spool.take(10)
        assert kept["payload"] == {"text": "my card number is 4111"}
    finally:
        spool.close()
        await engine.dispose()
    stored = _spool_bytes(tmp_path)
    assert b"4111" not in stored and b"HBgL" not in stored and b"dk1:" in stored


def _spool_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.glob("desk-intake.db*"))


def keys(sub: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`deskbot keys SUB` in a process, with only ``env``'s desk settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DESK_")}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "keys", sub],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )


def _now() -> object:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_keys_new_prints_a_key_once_and_check_says_how_data_is_stored(tmp_path: Path) -> None:
    made = deskbot("keys", {}, tmp_path)
    assert made.returncode == 2  # `keys` wants a subcommand
    new = keys("new", {}, tmp_path)
    assert new.returncode == 0, new.stderr
    key = new.stdout.strip()
    assert len(crypto.parse_key(key)) == 32
    assert f"key id {crypto.key_id(crypto.parse_key(key))}" in new.stderr
    clear = deskbot("check", {}, tmp_path)
    assert clear.returncode == 0, clear.stderr
    assert (
        "data at rest: stored in clear (no DESK_DATA_KEY; `deskbot keys new` makes one)"
        in clear.stdout.splitlines()
    )
    keyed = deskbot("check", {"DESK_DATA_KEY": key, "DESK_DATA_OLD_KEYS": OLD}, tmp_path)
    assert keyed.returncode == 0, keyed.stderr
    ring = Keyring.of(key, [OLD])
    assert (
        f"data at rest: customers' data encrypted (AES-GCM, key {ring.key_id};"
        f" old keys still read: {ring.old_ids[0]})"
    ) in keyed.stdout.splitlines()
    assert key not in keyed.stdout + keyed.stderr and OLD not in keyed.stdout + keyed.stderr


def test_keys_rotate_from_the_command_line_seals_the_clear_rows(tmp_path: Path) -> None:
    """A desk that ran without a key: `deskbot keys rotate` with the key seals what it stored."""
    import asyncio
    import sqlite3

    from storage.db import create_engine, migrate

    url = f"sqlite+aiosqlite:///{tmp_path / 'desk.db'}"

    async def a_clear_desk() -> None:
        engine = create_engine(url)
        await migrate(engine)
        async with session_factory(engine).begin() as s:
            s.add(Customer(name="Clara Clear", note="lives at 5 Elm Street", created_at=_now()))
        await engine.dispose()

    asyncio.run(a_clear_desk())
    refused = keys("rotate", {"DESK_DATABASE_URL": url}, tmp_path)
    assert refused.returncode == 2
    assert "deskbot keys rotate needs DESK_DATA_KEY" in refused.stderr
    ran = keys("rotate", {"DESK_DATABASE_URL": url, "DESK_DATA_KEY": KEY}, tmp_path)
    assert ran.returncode == 0, ran.stderr
    kid = Keyring.of(KEY).key_id
    assert "customers.name: 1 re-encrypted, 0 changed meanwhile" in ran.stdout
    assert f"every value is under key {kid}: the old keys can go" in ran.stdout
    with sqlite3.connect(tmp_path / "desk.db") as conn:
        dumped = "\n".join(conn.iterdump())
    assert "Clara" not in dumped and "Elm Street" not in dumped
    assert KEY not in ran.stdout + ran.stderr
