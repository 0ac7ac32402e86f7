"""The desk's lifecycle: ordered start-up, one HTTP server, background loops, a draining stop."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.email import EmailAdapter
from adapters.slack import SlackAdapter
from adapters.slack_socket import SlackSocket, SocketStartError
from adapters.telegram import TelegramAdapter
from adapters.whatsapp import WhatsAppAdapter
from bot import wiring
from bot.base import heap
from bot.base.clock import Clock, SystemClock
from bot.base.settings import Settings, require_platforms
from bot.delivery.adapter import Adapter
from bot.delivery.dispatcher import DbInbox, Dispatcher
from bot.delivery.leases import Heartbeat, reclaim_dead_leases
from bot.delivery.outbox import Metrics, OutboxSender, RateLimits
from bot.domain.classifier import Classifier, RulesClassifier
from bot.domain.outbound import ChannelSender
from bot.domain.rules import Rules
from bot.incidents.command import incident_languages
from bot.mail.store import MailStore
from bot.selfservice.kb import KnowledgeBase, kb_folder
from bot.selfservice.status import telegram_commands
from storage import crypto
from storage.db import create_engine, migrate, ping, problem, reach, session_factory
from storage.models import OutboxRow
from storage.queues import inbox_lag_seconds, outbox_backlog

log = logging.getLogger("deskbot")


class StartupError(RuntimeError):
    pass


def build_adapters(
    settings: Settings,
    inbox: DbInbox,
    rules: Rules | None = None,
    mail_store: MailStore | None = None,
) -> list[Adapter]:
    """The adapters of the channels the settings name; the e-mail one keeps its place in the
    mailbox (last UID, sent Message-IDs) through ``mail_store``."""
    adapters: list[Adapter] = []
    if settings.telegram:
        adapters.append(
            TelegramAdapter(
                settings.telegram,
                inbox,
                max_body_bytes=settings.max_body_bytes,
                commands=telegram_commands(rules) if rules is not None else None,
            )
        )
    if settings.whatsapp:
        adapters.append(
            WhatsAppAdapter(settings.whatsapp, inbox, max_body_bytes=settings.max_body_bytes)
        )
    if settings.email:
        adapters.append(EmailAdapter(settings.email, inbox, store=mail_store))
    if settings.slack:
        adapters.append(SlackAdapter(settings.slack, inbox, max_body_bytes=settings.max_body_bytes))
    return adapters


class DeskApp:
    def __init__(
        self,
        settings: Settings,
        rules: Rules,
        *,
        clock: Clock | None = None,
        classifier: Classifier | None = None,
        limits: RateLimits | None = None,
        drain_seconds: float = 5.0,
        idle_poll: float = 0.5,
        knowledge: KnowledgeBase | None = None,
    ) -> None:
        self.settings = settings
        # The knowledge base (bot/selfservice/kb.py); its index is brought up to date at start.
        self.knowledge = knowledge
        self.rules = rules
        self.desks = wiring.desks(rules)  # each step's Desk, with the features' hooks
        self.clock = clock or SystemClock()
        self.classifier: Classifier = classifier or RulesClassifier(rules.priority)
        self.limits = limits
        self.drain_seconds = drain_seconds
        self.idle_poll = idle_poll
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self._inbox_lag = Gauge(
            "deskbot_inbox_lag_seconds",
            "Age of the oldest unprocessed inbox event",
            registry=self.registry,
        )
        self._backlog = Gauge(
            "deskbot_outbox_backlog", "Outbound messages not yet delivered", registry=self.registry
        )
        # Slack Socket Mode (adapters/slack_socket.py): 1 while this process's socket is up.
        self._socket_up = Gauge(
            "deskbot_slack_socket_connected",
            "1 while the Slack Socket Mode connection is open (Socket Mode only)",
            registry=self.registry,
        )
        self._socket_reconnects = Counter(
            "deskbot_slack_socket_reconnects",
            "Slack Socket Mode connections replaced, by reason (refresh_requested, watchdog, …)",
            ["reason"],
            registry=self.registry,
        )
        self._stop = asyncio.Event()
        self._db_down: tuple[datetime, str] | None = None  # since when, and what
        self._tasks: set[asyncio.Task[None]] = set()
        self.engine: AsyncEngine | None = None
        self.sessions: async_sessionmaker[AsyncSession] | None = None
        self.adapters: list[Adapter] = []
        self.dispatcher: Dispatcher | None = None
        self.outbox: OutboxSender | None = None
        self.inbox: DbInbox | None = None
        self._runner: web.AppRunner | None = None
        self.heartbeat: Heartbeat | None = None
        self.url = ""

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Keep a reference to each background task and make its failure loud."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def _done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("task.failed name=%s", name, exc_info=t.exception())

        task.add_done_callback(_done)

    async def start(self) -> None:
        require_platforms(self.settings)  # a SettingsError, as from `deskbot check`
        crypto.install(self.settings.data_keys)  # None: customers' data in clear, as before
        self.engine = create_engine(self.settings.database_url)
        # An unreachable database is one line (DatabaseError), not the driver's traceback.
        await reach(self.engine)
        await migrate(self.engine)
        self.sessions = session_factory(self.engine)
        # Register, then, before the loops claim anything, take over what dead desks held:
        # this host's that no longer run, and any whose heartbeat stopped (bot/delivery/leases.py).
        self.heartbeat = Heartbeat(self.sessions, self.desks, self.clock)
        await self.heartbeat.beat()
        await reclaim_dead_leases(self.sessions, self.desks, self.clock.now())
        if self.knowledge is not None:
            await self.knowledge.sync(self.sessions, self.clock.now())
        self.inbox = DbInbox(self.sessions, self.clock)
        self.inbox.start()  # what a stopped desk left in the intake spool goes in first
        self.adapters = build_adapters(
            self.settings, self.inbox, self.rules, MailStore(self.sessions, self.clock)
        )
        senders: dict[str, ChannelSender] = {a.channel: a for a in self.adapters}
        self.outbox = wiring.outbox(
            self.sessions,
            senders,
            self.desks,
            self.clock,
            self.metrics,
            limits=self.limits,
            idle_poll=self.idle_poll,
            turn=self.inbox.turn,
        )
        self.dispatcher = wiring.dispatcher(
            self.sessions,
            self.desks,
            self.classifier,
            self.clock,
            self.inbox,
            knowledge=self.knowledge,
            # /link name@example.com: a mailbox to send the link from, a public URL to open it.
            email_links=bool(self.settings.email and self.settings.email.public_url),
            outbox_wakeup=self.outbox.wakeup,
            idle_poll=self.idle_poll,
        )
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        for adapter in self.adapters:
            adapter.install(app)
        # Bodies are read as sent: a compressed webhook is refused with 415 (adapters/_common.py)
        # instead of being inflated, unsigned, inside the HTTP parser.
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port)
        try:
            await site.start()
        except OSError as exc:  # the port is taken, the address is not this machine's
            where = f"{self.settings.http_host}:{self.settings.http_port}"
            raise StartupError(
                f"cannot listen on {where} (DESK_HTTP_HOST, DESK_HTTP_PORT): {exc.strerror or exc}"
            ) from None
        port = self._runner.addresses[0][1] if self._runner.addresses else self.settings.http_port
        self.url = f"http://{self.settings.http_host}:{port}"
        # Loops first, so whatever the adapters accept is processed straight away.
        self.spawn(self.dispatcher.run(self._stop), "dispatcher")
        self.spawn(self.outbox.run(self._stop), "outbox")
        slack = next((a for a in self.adapters if isinstance(a, SlackAdapter)), None)
        if slack is not None:
            slack.incident_languages = functools.partial(
                incident_languages, self.sessions, self.rules
            )
            slack.default_language = self.rules.texts.default_language
        self.jobs = wiring.jobs(
            self.sessions, self.desks, self.clock, outbox_wakeup=self.outbox.wakeup, slack=slack
        )
        self.sweeper, self.sla, self.digest = self.jobs.sweeper, self.jobs.sla, self.jobs.digest
        for name, job in self.jobs.named():
            self.spawn(job.run(self._stop), name)
        # Beats, and takes over a desk that stops beating, within seconds; wakes the loops then.
        self.heartbeat.on_takeover = self._wake_all
        self.spawn(self.heartbeat.run(self._stop), "heartbeat")
        for adapter in self.adapters:
            try:
                await adapter.start()
            except SocketStartError as exc:  # a refused app token: one line, not a traceback
                raise StartupError(str(exc)) from None
        if slack is not None and slack.socket is not None:
            reconnects = self._socket_reconnects
            slack.socket.on_reconnect = lambda reason: reconnects.labels(reason).inc()
        log.info(
            "desk.started url=%s channels=%s database=%s",
            self.url,
            ",".join(a.channel for a in self.adapters),
            self.engine.dialect.name,
        )

    async def stop(self) -> None:
        """Stop intake, finish the event being processed, drain the outbox briefly, close."""
        for adapter in self.adapters:
            if adapter.channel != "slack":  # Slack still has to take our last posts
                await _quietly(adapter.stop())
        self._stop.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        if self.outbox is not None:
            left = await self.outbox.drain(self.drain_seconds)
            if left:
                log.warning("desk.stopping undelivered=%d (they go out on the next start)", left)
        if self.heartbeat is not None:
            await _quietly(self.heartbeat.leave())
        # Every adapter now, Slack last to be stopped: the drain's sends may have opened a
        # platform's HTTP session again after its first stop (which only ended its intake), and
        # a session left open is reported unclosed at exit.
        for adapter in self.adapters:
            await _quietly(adapter.stop())
        if self._runner is not None:
            await self._runner.cleanup()
        if self.inbox is not None:
            await self.inbox.close()
        await self.classifier.close()
        if self.engine is not None:
            await self.engine.dispose()
        log.info("desk.stopped")

    def _wake_all(self) -> None:
        if self.outbox is not None:
            self.outbox.wakeup.set()
        if self.inbox is not None:
            self.inbox.arrived.set()

    async def _healthz(self, _request: web.Request) -> web.Response:
        """200 when the database answers and every adapter and loop works; otherwise 503 with
        what is wrong and since when, for as long as it lasts."""
        assert self.engine is not None
        checks: dict[str, Any] = {}
        try:
            await asyncio.wait_for(ping(self.engine), timeout=3)
            self._db_down = None
            checks["database"] = "ok"
        except Exception as exc:
            if self._db_down is None:
                self._db_down = (self.clock.now(), problem(exc))
            checks["database"] = self._db_down[1]
            checks["database_down_since"] = self._db_down[0].isoformat(timespec="seconds")
        checks["adapters"] = {a.channel: a.started for a in self.adapters}
        loops = {"dispatcher": self.dispatcher, "outbox": self.outbox}
        checks["loops"] = {
            name: "ok"
            if loop is None or loop.failing is None
            else f"{loop.failing[1]} (since {loop.failing[0].isoformat(timespec='seconds')})"
            for name, loop in loops.items()
        }
        socket = self._slack_socket()
        if socket is not None:
            checks["slack_socket"] = socket.describe()
        if checks["database"] == "ok" and any(a.channel == "whatsapp" for a in self.adapters):
            # A refused template is a setup problem (not a reason to restart the desk): listed,
            # the answer stays 200.
            checks["whatsapp_templates"] = await self._template_refusals()
        for adapter in self.adapters:
            if isinstance(adapter, EmailAdapter):  # listed; a mail server's hiccup is not a 503
                checks["email_imap"] = adapter.imap_state
        healthy = (
            checks["database"] == "ok"
            and all(checks["adapters"].values())
            and all(v == "ok" for v in checks["loops"].values())
            and (socket is None or socket.healthy)
        )
        return web.json_response(checks, status=200 if healthy else 503)

    async def _template_refusals(self) -> dict[str, str]:
        """WhatsApp templates refused in the last 7 days (unknown name or language, wrong
        parameter count, paused, disabled): the latest error of each, or "ok"."""
        assert self.sessions is not None
        since = self.clock.now() - timedelta(days=7)
        async with self.sessions() as session:
            rows = await session.execute(
                select(OutboxRow.payload, OutboxRow.last_error, OutboxRow.created_at)
                .where(
                    OutboxRow.channel == "whatsapp",
                    OutboxRow.status == "failed",
                    OutboxRow.last_error.like("TemplateRefused:%"),
                    OutboxRow.created_at >= since,
                )
                .order_by(OutboxRow.id)
            )
            found: dict[str, str] = {}
            for payload, error, at in rows.all():
                template = (payload or {}).get("template") or {}
                name = f"{template.get('name', '?')} ({template.get('language', '?')})"
                detail = str(error).removeprefix("TemplateRefused: ")
                found[name] = f"refused {at.isoformat(timespec='seconds')}: {detail}"
        configured = {
            f"{t.name} ({code})": "no refusal in the last 7 days"
            for t in self.rules.whatsapp.templates.values()
            for code in t.languages.values()
        }
        return {**configured, **found}

    def _slack_socket(self) -> SlackSocket | None:
        slack = next((a for a in self.adapters if isinstance(a, SlackAdapter)), None)
        return slack.socket if slack is not None else None

    async def _metrics(self, _request: web.Request) -> web.Response:
        assert self.sessions is not None
        if (socket := self._slack_socket()) is not None:
            self._socket_up.set(1 if socket.is_connected else 0)
        async with self.sessions() as session:
            self._inbox_lag.set(await inbox_lag_seconds(session, self.clock.now()))
            self._backlog.set(await outbox_backlog(session))
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )


async def _quietly(coro: Coroutine[Any, Any, None]) -> None:
    try:
        await coro
    except Exception:
        log.exception("desk.stop_error")


# -- running it -------------------------------------------------------------------------


async def _make_classifier(settings: Settings, rules: Rules) -> Classifier | None:
    if settings.model != "local":
        return None
    from bot.model import ModelClassifier  # the model is heavy: loaded only when asked for

    return await ModelClassifier.create(settings, rules)


async def make_knowledge(
    settings: Settings, rules: Rules, classifier: Classifier | None
) -> KnowledgeBase | None:
    """The knowledge base when ``kb.enabled`` and its folder has articles: with the model's
    encoder when it runs (a keyword-only desk without articles loads no encoder at all)."""
    if not rules.kb.enabled:
        return None
    folder = kb_folder(rules, settings.rules_path)
    if not any(folder.glob("*.md")):
        log.info("kb.none folder=%s (no articles: no answers before tickets)", folder)
        return None
    from bot.model import ModelClassifier  # the model is heavy: loaded only when asked for

    encoder = classifier.encoder if isinstance(classifier, ModelClassifier) else None
    return await KnowledgeBase.load(folder, encoder, settings.encoder_dir)


async def serve(
    settings: Settings,
    rules: Rules,
    *,
    banner: str = "",
    started: float | None = None,
    clock: Clock | None = None,
) -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly (draining the outbox for a few seconds).

    ``started`` (a ``time.monotonic()`` reading) adds how long the start took to the banner.
    """
    classifier = await _make_classifier(settings, rules)
    knowledge = await make_knowledge(settings, rules, classifier)
    desk = DeskApp(settings, rules, classifier=classifier, clock=clock, knowledge=knowledge)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await desk.start()
    except BaseException:
        # Nothing is serving yet: let go of the model's threads and the database, so that the
        # process ends with the one line the error makes (bot/cli.py), not a hang.
        await _quietly(desk.classifier.close())
        if desk._runner is not None:
            await desk._runner.cleanup()
        if desk.engine is not None:
            await desk.engine.dispose()
        raise
    heap.settle()  # what the start made stays: the collector need not walk it again
    if banner:
        if started is not None:
            banner += f"Ready in {time.monotonic() - started:.1f} s.\n"
        print(banner, flush=True)
    try:
        await stop.wait()
    finally:
        await desk.stop()
