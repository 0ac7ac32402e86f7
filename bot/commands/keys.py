"""``deskbot keys``: the data key of encryption at rest (storage/crypto.py).

``new`` prints a fresh key once (it is stored nowhere else). ``rotate`` re-seals, in small
batches while the desk runs, every sealed column under the current ``DESK_DATA_KEY``: values
under an old key (``DESK_DATA_OLD_KEYS``) and values still stored in clear. Each row is
written compare-and-set on the stored text, so a row the desk changed meanwhile (which it
wrote under the current key already) is left as the desk wrote it: nothing is lost.

The addresses (storage/crypto.Address, sealed deterministically) are rewritten a value at a
time: every row holding one stored form moves to the current key's form in one statement,
under the lock a new inbox or outbox row takes to choose its form (storage/queues.py), so a
conversation's unfinished rows never sit under two forms and keep their order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Text, cast, func, or_, select, type_coerce, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import InstrumentedAttribute

from bot.base.settings import SettingsError, load_settings
from storage import crypto
from storage.crypto import Address, EncryptedJSON, EncryptedText
from storage.db import AsyncSession, create_engine, migrate, session_factory
from storage.models import Base
from storage.queues import lock_address

BATCH = 200


@dataclass(frozen=True, slots=True)
class Sealed:
    """One sealed column of a table with a single-column primary key."""

    table: str
    column: str
    json: bool
    address: bool = False  # storage/crypto.Address: sealed deterministically

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"


def sealed_columns() -> list[Sealed]:
    """Every column of the models typed EncryptedText, EncryptedJSON or Address."""
    out = []
    for mapper in Base.registry.mappers:
        table: Any = mapper.local_table
        for col in table.columns:
            if isinstance(col.type, EncryptedText | EncryptedJSON | Address):
                out.append(
                    Sealed(
                        table.name,
                        col.name,
                        isinstance(col.type, EncryptedJSON),
                        isinstance(col.type, Address),
                    )
                )
    return sorted(out, key=lambda s: s.name)


def _model(table: str) -> tuple[Any, InstrumentedAttribute[Any]]:
    """The model of ``table`` and its (single-column) primary key, the rotation's order."""
    for mapper in Base.registry.mappers:
        if mapper.local_table.name == table:  # type: ignore[attr-defined]
            (pk,) = mapper.primary_key
            return mapper.class_, getattr(mapper.class_, str(pk.key))
    raise KeyError(table)


def _stale(col: InstrumentedAttribute[Any], ring: crypto.Keyring) -> Any:
    """Rows of ``col`` not sealed under the current key: clear, or under an old key."""
    if isinstance(col.type, Address):
        stored = type_coerce(col, Text)
        return (
            stored.is_not(None),
            stored != "",
            *(~stored.startswith(p, autoescape=True) for p in crypto.CLEAR_PREFIXES),
            ~stored.startswith(f"{crypto.ADDRESS_PREFIX}{ring.key_id}:", autoescape=True),
        )
    raw = cast(col, Text)
    return (
        col.is_not(None),
        raw != "",
        raw.not_in(('""', "null")),  # an empty text and a JSON null: nothing to hide
        or_(raw.is_(None), ~raw.like(f"%{crypto.PREFIX}{ring.key_id}:%")),
    )


def _plain(raw: str, is_json: bool, ring: crypto.Keyring) -> Any:
    """The value a stored text stands for, as the column type takes it back."""
    if not is_json:
        return ring.open(raw)
    doc = json.loads(raw)
    return json.loads(ring.open(doc)) if crypto.is_sealed(doc) else doc


async def _rotate_addresses(
    session_of: Any, sealed: Sealed, ring: crypto.Keyring, batch: int
) -> tuple[int, int]:
    """Move every stored form of an address not under the current key to the current key's
    form, all the rows of one form at once; returns (rows moved, forms left because moving
    them would collide with a row the desk wrote meanwhile under the current key)."""
    model, _ = _model(sealed.table)
    col: InstrumentedAttribute[Any] = getattr(model, sealed.column)
    raw = type_coerce(col, Text)
    done = 0
    refused: list[str] = []
    while True:
        async with session_of() as s:
            s_: AsyncSession = s
            async with s_.begin():
                forms = list(
                    await s_.scalars(
                        select(raw)
                        .where(*_stale(col, ring), *((raw.not_in(refused),) if refused else ()))
                        .distinct()
                        .limit(batch)
                    )
                )
            if not forms:
                return done, len(refused)
            for form in forms:
                new = ring.address(ring.open_address(form))
                try:
                    async with s_.begin():
                        await lock_address(s_, form)
                        result = await s_.execute(
                            update(model)
                            .where(raw == form)
                            .values({sealed.column: new})
                            .execution_options(synchronize_session=False)
                        )
                        done += result.rowcount  # type: ignore[attr-defined]
                except IntegrityError:
                    refused.append(form)
                except DBAPIError as exc:  # a deadlock with a desk's step: try it again
                    if "deadlock" not in str(exc).lower():
                        raise


async def _rotate_column(
    session_of: Any, sealed: Sealed, ring: crypto.Keyring, batch: int
) -> tuple[int, int]:
    """Re-seal one column; returns (re-sealed, skipped because the desk changed them)."""
    if sealed.address:
        return await _rotate_addresses(session_of, sealed, ring, batch)
    model, pk = _model(sealed.table)
    col: InstrumentedAttribute[Any] = getattr(model, sealed.column)
    done = skipped = 0
    last: Any = None
    while True:
        async with session_of() as s, s.begin():
            s_: AsyncSession = s
            rows = (
                await s_.execute(
                    select(pk, cast(col, Text))
                    .where(*_stale(col, ring), *(() if last is None else (pk > last,)))
                    .order_by(pk)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return done, skipped
            for row_id, raw in rows:
                last = row_id
                value = _plain(raw, sealed.json, ring)
                result = await s_.execute(
                    update(model)
                    .where(pk == row_id, cast(col, Text) == raw)
                    .values({sealed.column: value})
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    done += 1
                else:
                    skipped += 1


async def remaining(session_of: Any, ring: crypto.Keyring) -> dict[str, int]:
    """Per column, how many values are not under the current key."""
    out: dict[str, int] = {}
    async with session_of() as s:
        for sealed in sealed_columns():
            col = getattr(_model(sealed.table)[0], sealed.column)
            n = await s.scalar(select(func.count()).where(*_stale(col, ring)))
            if n:
                out[sealed.name] = int(n)
    return out


async def rotate(database_url: str, batch: int = BATCH, out: Any = sys.stdout) -> int:
    """Re-seal everything under the current key; 0 when nothing is left under another."""
    ring = crypto.keyring()
    if ring is None:
        raise SettingsError("deskbot keys rotate needs DESK_DATA_KEY (the key to seal with)")
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        sessions = session_factory(engine)
        for _ in range(3):  # a second pass takes rows the desk held during the first
            for sealed in sealed_columns():
                done, skipped = await _rotate_column(sessions, sealed, ring, batch)
                if done or skipped:
                    print(
                        f"{sealed.name}: {done} re-encrypted, {skipped} changed meanwhile", file=out
                    )
            left = await remaining(sessions, ring)
            if not left:
                print(f"every value is under key {ring.key_id}: the old keys can go", file=out)
                return 0
        print(
            "still under another key or in clear (is every desk process on the new key?): "
            + ", ".join(f"{name} {n}" for name, n in left.items()),
            file=out,
        )
        return 1
    finally:
        await engine.dispose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="deskbot keys", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("new", help="print a fresh data key (once: keep it, it is stored nowhere)")
    rot = sub.add_parser("rotate", help="re-encrypt every value under DESK_DATA_KEY, in batches")
    rot.add_argument(
        "--batch", type=int, default=BATCH, help=f"rows a transaction (default {BATCH})"
    )
    args = parser.parse_args(argv)
    if args.command == "new":
        key = crypto.new_key()
        print(key)
        print(
            f"key id {crypto.key_id(crypto.parse_key(key))}: put it in DESK_DATA_KEY (or a file"
            " named by DESK_DATA_KEY_FILE). It is printed once and stored nowhere: without it"
            " the encrypted data cannot be read. Back it up apart from the database.",
            file=sys.stderr,
        )
        return 0
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"deskbot keys: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(rotate(settings.database_url, args.batch))
    except (SettingsError, crypto.DataKeyError) as exc:
        print(f"deskbot keys: {exc}", file=sys.stderr)
        return 2
