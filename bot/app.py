"""The desk's lifecycle: ordered start-up, one HTTP server, background loops, a draining stop."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.base.clock import Clock, SystemClock
from bot.base.settings import Settings, desk_tz
from bot.core.roles import GroupRefresher
from bot.customers.privacy import RawPurger
from bot.delivery.adapter import Adapter
from bot.delivery.dispatcher import DbInbox, Dispatcher
from bot.delivery.jobs import AssignmentSweeper, PresencePoller, SlaScheduler
from bot.delivery.leases import Heartbeat, reclaim_dead_leases
from bot.delivery.outbox import Metrics, OutboxSender, RateLimits
from bot.domain.classifier import Classifier, RulesClassifier
from bot.domain.outbound import ChannelSender
from bot.domain.rules import Rules
from bot.incidents.desk import incident_languages
from bot.reports.digest import DigestScheduler
from bot.selfservice.kb import KnowledgeBase
from storage.db import create_engine, migrate, ping, problem, session_factory
from storage.queues import inbox_lag_seconds, outbox_backlog

log = logging.getLogger("deskbot")


class StartupError(RuntimeError):
    pass


def build_adapters(settings: Settings, inbox: DbInbox, rules: Rules | None = None) -> list[Adapter]:
    adapters: list[Adapter] = []
    if settings.telegram:
        from adapters.telegram import TelegramAdapter
        from bot.selfservice.status import telegram_commands

        adapters.append(
            TelegramAdapter(
                settings.telegram,
                inbox,
                max_body_bytes=settings.max_body_bytes,
                commands=telegram_commands(rules) if rules is not None else None,
            )
        )
    if settings.whatsapp:
        from adapters.whatsapp import WhatsAppAdapter

        adapters.append(
            WhatsAppAdapter(settings.whatsapp, inbox, max_body_bytes=settings.max_body_bytes)
        )
    if settings.slack:
        from adapters.slack import SlackAdapter

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
        if not self.settings.slack:
            raise StartupError(
                "Slack is not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET "
                "(agents work in Slack; without it no one sees the tickets)"
            )
        if not self.settings.customer_channels:
            raise StartupError(
                "no customer channel is configured: set TELEGRAM_BOT_TOKEN, or the four "
                "WHATSAPP_* variables (see the README), or both"
            )
        self.engine = create_engine(self.settings.database_url)
        await migrate(self.engine)
        self.sessions = session_factory(self.engine)
        # Register, then, before the loops claim anything, take over what dead desks held:
        # this host's that no longer run, and any whose heartbeat stopped (bot/delivery/leases.py).
        self.heartbeat = Heartbeat(self.sessions, self.rules, self.clock)
        await self.heartbeat.beat()
        await reclaim_dead_leases(self.sessions, self.rules, self.clock.now())
        if self.knowledge is not None:
            await self.knowledge.sync(self.sessions, self.clock.now())
        self.inbox = DbInbox(self.sessions, self.clock)
        self.adapters = build_adapters(self.settings, self.inbox, self.rules)
        senders: dict[str, ChannelSender] = {a.channel: a for a in self.adapters}
        self.outbox = OutboxSender(
            self.sessions,
            senders,
            self.rules,
            self.clock,
            self.metrics,
            limits=self.limits,
            idle_poll=self.idle_poll,
            turn=self.inbox.turn,
        )
        self.dispatcher = Dispatcher(
            self.sessions,
            self.rules,
            self.classifier,
            self.clock,
            self.inbox,
            outbox_wakeup=self.outbox.wakeup,
            idle_poll=self.idle_poll,
            knowledge=self.knowledge,
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
        await site.start()
        port = self._runner.addresses[0][1] if self._runner.addresses else self.settings.http_port
        self.url = f"http://{self.settings.http_host}:{port}"
        # Loops first, so whatever the adapters accept is processed straight away.
        self.spawn(self.dispatcher.run(self._stop), "dispatcher")
        self.spawn(self.outbox.run(self._stop), "outbox")
        self.sweeper = AssignmentSweeper(
            self.sessions, self.rules, self.clock, outbox_wakeup=self.outbox.wakeup
        )
        self.spawn(self.sweeper.run(self._stop), "assignment")
        self.sla = SlaScheduler(
            self.sessions, self.rules, self.clock, outbox_wakeup=self.outbox.wakeup
        )
        self.spawn(self.sla.run(self._stop), "sla")
        # Beats, and takes over a desk that stops beating, within seconds; wakes the loops then.
        self.heartbeat.on_takeover = self._wake_all
        self.spawn(self.heartbeat.run(self._stop), "heartbeat")
        slack = next((a for a in self.adapters if a.channel == "slack"), None)
        if slack is not None:
            slack.incident_languages = functools.partial(  # type: ignore[attr-defined]
                incident_languages, self.sessions, self.rules
            )
            slack.default_language = self.rules.texts.default_language  # type: ignore[attr-defined]
            groups = GroupRefresher(
                self.sessions,
                self.rules,
                self.clock,
                slack.usergroup_members,  # type: ignore[attr-defined]
            )
            self.spawn(groups.run(self._stop), "roles")
        self.digest = DigestScheduler(
            self.sessions,
            self.rules,
            self.clock,
            desk_tz(),
            workspace=None if slack is None else slack.workspace_domain,  # type: ignore[attr-defined]
            outbox_wakeup=self.outbox.wakeup,
        )
        self.spawn(self.digest.run(self._stop), "digest")
        self.spawn(RawPurger(self.sessions, self.rules, self.clock).run(self._stop), "retention")
        if self.rules.availability.assignment_presence == "slack" and slack is not None:
            poller = PresencePoller(
                self.sessions,
                self.rules,
                self.clock,
                slack.presence,  # type: ignore[attr-defined]
            )
            self.spawn(poller.run(self._stop), "presence")
        for adapter in self.adapters:
            await adapter.start()
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
        for adapter in self.adapters:
            if adapter.channel == "slack":
                await _quietly(adapter.stop())
        if self._runner is not None:
            await self._runner.cleanup()
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
        healthy = (
            checks["database"] == "ok"
            and all(checks["adapters"].values())
            and all(v == "ok" for v in checks["loops"].values())
        )
        return web.json_response(checks, status=200 if healthy else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        assert self.sessions is not None
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
