"""A step's frequent statements built once, compiled once, and run on SQLite's driver.

Through ``Session.execute`` a statement cost about 0.3 ms of Python on this project's slower
machines before SQLite saw it (building the statement, about 0.08 ms; its cache key, the
execution context and the result's set-up, about 0.2 ms), where sqlite3 runs the desk's indexed
statements in a few microseconds (docs/performance.md, "Issue 27, tenth slice"). A
:class:`Statement` is built once at import with its parameters named (``bindparam``), compiled
once for SQLite, and on the inline connection (storage/inline_sqlite.py) run on the driver: its
values through the columns' own bind processors (sealing under a data key included), its rows
through their result processors (opening, datetimes). Anywhere else (PostgreSQL, aiosqlite's
thread) it goes through ``Session.execute`` as before, the same statement.

What ``Session.execute`` did around a statement is done here too: the session is flushed first
(its autoflush, so a read sees the step's own changes), the trail's kept rows are written
(storage/trail.py, as before any statement), and an entity read (``select(Ticket)``) gives the
session's own object when the session holds it, else a new persistent one, as the ORM's loader
would. The engine's cursor events do not see these statements (bench.loop counts SQLite's at
the driver). SQLAlchemy has no public way to run a compiled statement on a DBAPI connection
without its execution context, which is the cost; storage/rows.py does the same for new rows.

A sealed address (storage/crypto.Address) is compared in every form a key rotation still reads:
write such a comparison ``address_in(column, "name")`` and pass ``address_forms(value)``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Dialect, Text, bindparam, inspect, type_coerce
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, Session, make_transient_to_detached
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select

from storage.inline_sqlite import InlineConnection
from storage.trail import write_async

Processor = Callable[[Any], Any]


def address_in(column: Any, name: str) -> ColumnElement[bool]:
    """``column IN (:name)`` over the stored forms, as :class:`storage.crypto.Address`'s ``==``
    compares: pass ``storage.crypto.address_forms(value)`` as ``name``."""
    return type_coerce(column, Text).in_(bindparam(name, expanding=True))


_DRIVER = "deskbot.statements.driver"  # (the transaction, its inline connection or None)


async def inline(session: AsyncSession) -> InlineConnection | None:
    """The session's inline SQLite connection (its transaction, or savepoint, begun), or None.

    Found once a transaction or savepoint: through SQLAlchemy's connection and pool it took a
    good part of a statement. Once each, because ``Session.connection()`` is what emits a
    savepoint's ``SAVEPOINT`` (lazily, at its first statement): a statement on the driver
    before it would not be rolled back with the savepoint."""
    sync = session.sync_session
    known = sync.info.get(_DRIVER)
    tx = sync.get_nested_transaction() or sync.get_transaction()
    if known is not None and tx is not None and known[0] is tx:
        found: InlineConnection | None = known[1]
        return found
    conn = await session.connection()  # begins the transaction or savepoint if not begun
    driver: InlineConnection | None = None
    if conn.dialect.name == "sqlite":
        raw = (await conn.get_raw_connection()).driver_connection
        driver = raw if isinstance(raw, InlineConnection) else None
    sync.info[_DRIVER] = (sync.get_nested_transaction() or sync.get_transaction(), driver)
    return driver


@dataclass(frozen=True, slots=True)
class _Entity:
    """Where one entity of a read's rows lies, and how its object is made."""

    mapper: Mapper[Any]
    start: int
    keys: tuple[str, ...]  # attribute keys of the columns start, start + 1, …
    primary: tuple[int, ...]  # positions of the primary key's columns among them


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    compiled: SQLCompiler
    names: tuple[str, ...]  # the parameters, in the statement's order
    defaults: Mapping[str, Any]  # the values the statement was built with (a literal's)
    fills: tuple[tuple[str, Callable[[], Any]], ...]  # callable defaults, called when not given
    processors: Mapping[str, Processor]
    lists: tuple[str, ...]  # the expanding parameters (``IN`` a list)
    results: tuple[Processor | None, ...]
    # For each count of the lists' items: the SQL, and where each of its values comes from
    # (a parameter, an item of a list parameter) with its bind processor.
    shapes: dict[tuple[int, ...], tuple[str, tuple[tuple[str, int | None, Processor | None], ...]]]


class Statement:
    """One statement, run on SQLite's driver where the session's connection is the inline one.

    ``rows``/``first``/``scalar`` read; ``run`` and ``run_many`` write (``run_many`` is an
    executemany). For a read of entities (``select(Ticket)``, ``select(Identity, Customer)``)
    the rows hold the session's objects, each entity where the ORM's row would have it."""

    def __init__(
        self,
        statement: Select[*tuple[Any, ...]] | UpdateBase,
        *,
        autoflush: bool = True,
        by_column: bool = False,
    ) -> None:
        self.statement = statement
        # True: an INSERT whose values are given by column key, as ``Session.execute`` takes an
        # INSERT's rows (compiled once for each set of keys; the rows of one call share theirs).
        self._by_column = by_column
        # False: the session is not flushed first on SQLite (storage/rows.py's new rows, whose
        # parents are written before them and need no flush of the step's other changes).
        self._autoflush = autoflush
        self._compiled: dict[tuple[type[Dialect], tuple[str, ...]], _Compiled] = {}
        self._entities = _layout(statement) if isinstance(statement, Select) else ()

    def _compile(self, dialect: Dialect, keys: tuple[str, ...] = ()) -> _Compiled:
        done = self._compiled.get((type(dialect), keys))
        if done is not None:
            return done
        compiled = self.statement.compile(dialect=dialect, column_keys=list(keys) or None)
        assert isinstance(compiled, SQLCompiler)
        # The columns' Python defaults for the values not given, which SQLAlchemy's execution
        # context would work out (an inbox row's ``attempts``, say).
        fills: list[tuple[str, Callable[[], Any]]] = []
        for column in compiled.insert_prefetch:
            fill = column_default(column)
            if fill is None:
                raise TypeError(f"{column}: only scalar and callable defaults are worked out")
            fills.append((column.key, fill))
        names = tuple(compiled.positiontup or ())
        processors = {
            name: fn
            for name, bind in compiled.binds.items()
            if (fn := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        statement = self.statement
        columns = (
            statement.selected_columns
            if isinstance(statement, Select)
            else statement.exported_columns  # what it returns (RETURNING)
        )
        results = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
        done = self._compiled[(type(dialect), keys)] = _Compiled(
            sql=compiled.string,
            compiled=compiled,
            names=names,
            defaults={
                name: bind.value
                for name, bind in compiled.binds.items()
                if not bind.required and bind.callable is None
            },
            fills=tuple(fills),
            processors=processors,
            lists=tuple(name for name, bind in compiled.binds.items() if bind.expanding),
            results=results,
            shapes={},
        )
        return done

    def _arguments(self, c: _Compiled, given: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        params = {**c.defaults, **given}
        for name, fill in c.fills:
            if name not in given:
                params[name] = fill()
        if not c.lists:
            return c.sql, tuple(
                fn(params[name]) if (fn := c.processors.get(name)) else params[name]
                for name in c.names
            )
        # A list's items are one bound value each (``IN (?, ?, ?)``): SQLAlchemy expands the
        # statement for each execution; here once for each count of items.
        for name in c.lists:
            if not isinstance(params[name], list | tuple):
                params[name] = list(params[name])  # a set, say: its items by position
        shape = tuple(len(params[name]) for name in c.lists)
        plan = c.shapes.get(shape)
        if plan is None:
            expanded = c.compiled.construct_expanded_state(params)
            item = {
                name: (list_name, i)
                for list_name, names in expanded.parameter_expansion.items()
                for i, name in enumerate(names)
            }
            fns = {**c.processors, **expanded.processors}
            plan = c.shapes[shape] = (
                expanded.statement,
                tuple(
                    (*item.get(name, (name, None)), fns.get(name))
                    for name in expanded.positiontup or ()
                ),
            )
        sql, slots = plan
        values = (params[name] if i is None else params[name][i] for name, i, _ in slots)
        return sql, tuple(
            value if fn is None else fn(value)
            for value, (_, _, fn) in zip(values, slots, strict=True)
        )

    async def _driver(self, session: AsyncSession) -> InlineConnection | None:
        driver = await inline(session)
        if driver is not None:
            sync = session.sync_session
            if self._autoflush and sync.autoflush and (sync.new or sync.dirty or sync.deleted):
                await session.flush()  # the session's autoflush: a read sees the step's changes
            await write_async(session)  # the trail's kept rows go first, as before any statement
        return driver

    async def rows(self, session: AsyncSession, **params: Any) -> list[tuple[Any, ...]]:
        driver = await self._driver(session)
        if driver is None:
            return [tuple(row) for row in (await session.execute(self.statement, params)).all()]
        c = self._compile(session.get_bind().dialect)
        sql, args = self._arguments(c, params)
        try:
            cursor = await driver.execute(sql, args)
            raw = await cursor.fetchall()
            await cursor.close()
        except sqlite3.Error as exc:
            raise _translated(sql, args, exc) from exc
        rows = [
            tuple(
                value if fn is None else fn(value) for value, fn in zip(row, c.results, strict=True)
            )
            for row in raw
        ]
        if self._entities:
            rows = [self._load(session.sync_session, row) for row in rows]
        return rows

    async def first(self, session: AsyncSession, **params: Any) -> tuple[Any, ...] | None:
        rows = await self.rows(session, **params)
        return rows[0] if rows else None

    async def scalar(self, session: AsyncSession, **params: Any) -> Any:
        row = await self.first(session, **params)
        return None if row is None else row[0]

    async def run(self, session: AsyncSession, **params: Any) -> int:
        """Write; returns how many rows it changed."""
        return await self.run_many(session, (params,))

    async def run_many(self, session: AsyncSession, many: Iterable[Mapping[str, Any]]) -> int:
        """The statement once for each set of values (an executemany); the rows it changed."""
        batch = list(many)
        if not batch:
            return 0
        driver = await self._driver(session)
        if driver is None:
            result: Any = await session.execute(self.statement, batch)
            return int(result.rowcount)
        c = self._compile(session.get_bind().dialect, tuple(batch[0]) if self._by_column else ())
        try:
            if c.lists:
                changed = 0
                for params in batch:
                    sql, args = self._arguments(c, params)
                    cursor = await driver.execute(sql, args)
                    changed += cursor.rowcount
                    await cursor.close()
                return changed
            arguments = [self._arguments(c, params)[1] for params in batch]
            if len(arguments) == 1:
                cursor = await driver.execute(c.sql, arguments[0])
            else:
                cursor = await driver.cursor()
                await cursor.executemany(c.sql, arguments)
            changed = cursor.rowcount
            await cursor.close()
            return changed
        except sqlite3.Error as exc:
            raise _translated(c.sql, batch, exc) from exc

    def _load(self, session: Session, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """The row with each entity's columns made into the session's object."""
        out: list[Any] = []
        at = 0
        for entity in self._entities:
            out.extend(row[at : entity.start])
            values = row[entity.start : entity.start + len(entity.keys)]
            at = entity.start + len(entity.keys)
            if all(values[i] is None for i in entity.primary):
                out.append(None)  # an outer join's missing side
                continue
            out.append(_object(session, entity, values))
        out.extend(row[at:])
        return tuple(out)


def column_default(column: Any) -> Callable[[], Any] | None:
    """A column's Python default as a function of nothing (None without one)."""
    default = column.default
    if default is None:
        return None
    if default.is_scalar:
        value = default.arg
        return lambda: value
    if default.is_callable:
        fn = default.arg
        return lambda: fn(None)  # SQLAlchemy wraps a callable without arguments to take a context
    raise TypeError(f"{column}: only scalar and callable defaults are worked out here")


def _translated(sql: str, params: Any, exc: sqlite3.Error) -> StatementError:
    """The driver's error as SQLAlchemy raises it (``IntegrityError``, ``OperationalError`` …),
    which is what the desk's callers catch."""
    return DBAPIError.instance(sql, params, exc, sqlite3.Error)


def _layout(statement: Select[*tuple[Any, ...]]) -> tuple[_Entity, ...]:
    """Where each selected entity's columns are in the statement's rows."""
    entities: list[_Entity] = []
    at = 0
    for description in statement.column_descriptions:
        expr = description["expr"]
        if isinstance(expr, type):
            mapper: Mapper[Any] = inspect(expr)
            columns = list(Select(expr).selected_columns)
            keys = tuple(mapper.get_property_by_column(column).key for column in columns)
            primary = tuple(
                keys.index(mapper.get_property_by_column(pk).key) for pk in mapper.primary_key
            )
            entities.append(_Entity(mapper, at, keys, primary))
            at += len(columns)
        else:
            at += 1
    return tuple(entities)


def _object(session: Session, entity: _Entity, values: Sequence[Any]) -> Any:
    """The session's object for a row, as the ORM's loader gives it: the one the session
    holds (what it holds is not overwritten, as a plain ``select`` does not), else a new
    persistent object holding the row."""
    mapper = entity.mapper
    key = mapper.identity_key_from_primary_key(tuple(values[i] for i in entity.primary))
    held = session.identity_map.get(key)
    if held is not None:
        return held
    obj = mapper.class_manager.new_instance()
    obj.__dict__.update(zip(entity.keys, values, strict=True))
    make_transient_to_detached(obj)  # what it holds is what the database holds
    session.add(obj)  # persistent and clean: a change to it is an UPDATE at the next flush
    return obj
