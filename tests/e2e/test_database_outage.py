"""The database becomes unreachable while the desk runs (a network partition between the desk
and PostgreSQL, made with a TCP proxy that is cut and restored): /healthz says what is wrong and
since when for as long as it lasts, the customer's message written meanwhile is not lost
(WhatsApp retries the refused webhook), and the desk is healthy again once the database is."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from bot.app import DeskApp
from bot.delivery.outbox import RateLimits
from storage.models import InboxRow

from .conftest import RULES, Stack, desk_settings, eventually, free_port, start_standins


class CuttableLink:
    """A TCP proxy to PostgreSQL that can be cut (every connection dropped, none accepted) and
    restored: what a network partition looks like to the desk."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._up = False
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._up = True

    async def cut(self) -> None:
        self._up = False
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Held from the moment it is accepted: a connection accepted just before a cut, still
        # opening its way to PostgreSQL, must be cut too (it once outlived the cut and kept the
        # desk's dispatcher working through the "outage"). One accepted before the cut whose
        # handler runs only after the cut is dropped here.
        if not self._up:
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        if writer not in self._writers:  # cut meanwhile
            up_writer.transport.abort()
            writer.transport.abort()
            return
        self._writers.add(up_writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}


_SEEN = (
    InboxRow.id,
    InboxRow.kind,
    InboxRow.status,
    InboxRow.attempts,
    InboxRow.lease_owner,
    InboxRow.lease_until,
    InboxRow.error,
)


def _print_dispatcher_stack() -> None:
    """Every task's chain of awaits, innermost last: where the dispatcher waits, and on what
    (SQLAlchemy closes a session in a task of its own, which the dispatcher awaits)."""
    for task in asyncio.all_tasks():
        frames: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is not None:
                frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
        print("task", task.get_name(), "->", " | ".join(frames) or repr(task))


async def _health(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as r:
        return r.status, json.loads(await r.text())


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_healthz_tells_a_lost_database_and_nothing_is_lost(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    real = make_url(database_url)
    link = CuttableLink(real.host or "127.0.0.1", real.port or 5432)
    await link.restore()
    through_link = real.set(port=link.port).render_as_string(hide_password=False)
    standins = await start_standins(rate_limits=False)
    port: int = standins.desk_port  # type: ignore[attr-defined]
    desk = DeskApp(
        desk_settings(standins, through_link, port),
        RULES,
        idle_poll=0.05,
        limits=RateLimits.lifted(),
    )
    await desk.start()
    stack = Stack(standins, desk, database_url)
    assert desk.url is not None
    wa = standins.whatsapp
    try:
        status, health = await _health(desk.url)
        assert status == 200
        assert health.pop("whatsapp_templates")  # the templates rules.yaml names, not refused
        assert health == {
            "database": "ok",
            "adapters": {"telegram": True, "whatsapp": True, "slack": True},
            "loops": {"dispatcher": "ok", "outbox": "ok"},
        }
        await wa.customer_says("15550300001", "My parcel never came", name="Rosa")
        card = await stack.card()

        await link.cut()
        status, health = await _health(desk.url)
        assert status == 503
        assert health["database"] != "ok" and "Error" in health["database"]
        assert "database_down_since" in health
        assert "postgres@" not in json.dumps(health)  # no connection string, no credentials
        # Written while the database is away: the webhook is refused, and WhatsApp retries.
        await wa.customer_says("15550300001", "Hello? Anyone there?", name="Rosa")

        async def loop_failing() -> bool:
            return bool((await _health(desk.url or ""))[1]["loops"]["dispatcher"] != "ok")

        # A bound on a hang (the dispatcher's next claim fails at once); three test workers on
        # two cores stretched the 10 s this was once.
        try:
            await eventually(loop_failing, "the dispatcher to report the lost database", timeout=30)
        except AssertionError:
            _print_dispatcher_stack()  # where it waits, for whoever reads the failure
            raise
        status, health = await _health(desk.url)
        assert status == 503 and "since" in health["loops"]["dispatcher"]

        await link.restore()

        async def healthy() -> bool:
            return (await _health(desk.url or ""))[0] == 200

        await eventually(healthy, "/healthz to be 200 again", timeout=15)
        # Each loop tried again and again while the database was away, each try a little later
        # (up to 2 s apart), and said so once, with a traceback, then once when it worked again.
        said = [r.getMessage().split()[0] for r in caplog.records]
        assert 1 <= said.count("dispatcher.loop_error") <= 2, said.count("dispatcher.loop_error")
        assert said.count("outbox.loop_error") <= 2, said.count("outbox.loop_error")
        assert "dispatcher.loop_recovered" in said

        async def followed_up() -> list[str]:
            thread = [m["text"] for m in standins.slack.thread(card["channel"], card["ts"])]
            return [t for t in thread if "Anyone there?" in t]

        try:
            await eventually(followed_up, "the message written during the outage", timeout=30)
        except AssertionError:
            posts = [(m["ts"], m.get("thread_ts"), m["text"][:60]) for m in stack.cards()]
            print("cards:", posts, "webhook attempts:", wa._deliverer.attempts[-12:])
            async with stack.sessions() as s:
                rows = (await s.execute(select(*_SEEN).order_by(InboxRow.id))).all()
            print("inbox:", [tuple(r) for r in rows], "now:", desk.clock.now())
            _print_dispatcher_stack()
            raise
    finally:
        # The database back first, whatever failed above while it was cut: the desk's stop
        # writes, and its connection refused would hide the failure that got us here.
        await link.restore()
        await desk.stop()
        await standins.stop()
        await link.cut()
