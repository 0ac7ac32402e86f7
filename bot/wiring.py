"""The composition root: what the desk does with each event, and who hears of what.

This is the one place where the features and the delivery loop meet. Read it to learn the
desk's behaviour at a glance:

* :func:`routes`: each kind of inbox event and the handler that takes it, in order of
  precedence (the first route whose guard matches takes the event).
* :func:`preparers`: what is worked out for an event before its transaction.
* :func:`hooks`: the core's ports (cards, incidents) and the features that hear its domain
  events and phases, in the order they run.
* :func:`renderers` and :func:`recovery`: what the outbox draws when it sends, and how it puts
  back a card someone deleted.
* :func:`jobs`: the loops that run on a timer.

A new feature is a new package under ``bot/`` registered here; the core (``bot/core``) and the
loop (``bot/delivery``) are not edited for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.slack import SlackAdapter
from bot.automations import journal as automation_journal
from bot.automations import runner as automations
from bot.automations.scheduler import AutomationScheduler
from bot.base.clock import Clock
from bot.base.settings import desk_tz
from bot.console.desk_command import answer_command
from bot.core.roles import GroupRefresher
from bot.core.step import (
    CustomerWrote,
    DeliveryRecorded,
    Hooks,
    OutsideWindow,
    TicketReopened,
    TicketSeated,
)
from bot.core.tickets import Desk, Desks
from bot.customers import email_link, linking
from bot.customers.privacy import RawPurger
from bot.delivery.dispatcher import DbInbox, Dispatcher
from bot.delivery.jobs import AssignmentSweeper, PresencePoller
from bot.delivery.outbox import Metrics, OutboxSender, Recovery, RecoveryFactory, Renderers
from bot.delivery.routes import NEXT, Preparers, Routes
from bot.domain.classifier import Classifier
from bot.domain.customer_requests import STATUS_BUTTON, StatusRequest, is_link_request
from bot.domain.events import (
    AgentAction,
    AgentMessage,
    AgentReply,
    CustomerBlocked,
    CustomerButton,
    CustomerContact,
    CustomerEdit,
    CustomerMessage,
    CustomerNote,
    CustomerNumberChanged,
    CustomerReaction,
    CustomerStart,
    DeliveryStatus,
    HistoryModal,
    HomeEvent,
    Ignored,
    ReplyModal,
    SlashCommand,
)
from bot.domain.outbound import ChannelSender, Outbound
from bot.domain.prepared import Prepared
from bot.domain.rules import Rules
from bot.incidents import desk as incidents
from bot.incidents.command import incident_action
from bot.incidents.render import IncidentRenderer
from bot.mail.threads import thread_mail
from bot.reports.digest import DigestScheduler
from bot.reports.offloop import ReportPreparer
from bot.selfservice import kb
from bot.selfservice.prepare import KbMatcher, status_lookup
from bot.selfservice.status import answer_status
from bot.sla import keeper as sla
from bot.sla.timers import SlaScheduler
from bot.window import keeper as window
from bot.workspace import controls, home
from bot.workspace.card_view import SlackCards
from bot.workspace.composer import agent_reply, reply_modal
from bot.workspace.history import customer_note, history_modal
from bot.workspace.recovery import CardRecovery

log = logging.getLogger("deskbot.dispatcher")
E = TypeVar("E")


def hooks() -> Hooks:
    """The core's ports, and who hears its domain events and phases (in this order)."""
    h = Hooks(cards=SlackCards(), placer=incidents.IncidentPlacer())
    h.subscribe(TicketSeated, sla.on_seated)  # clocks first: the card shows them
    h.subscribe(TicketReopened, incidents.on_reopened)
    h.subscribe(DeliveryRecorded, sla.on_delivered)
    h.subscribe(DeliveryRecorded, incidents.on_delivered)
    # WhatsApp's 24-hour window: replies held and a template sent; released when they write.
    h.subscribe(OutsideWindow, window.on_outside_window)
    h.subscribe(CustomerWrote, window.on_customer_wrote)
    # Automations first: what their actions change is timed by the SLA clocks after them.
    automation_journal.listen()
    h.after_event.append(automations.after_event)
    h.after_event.append(sla.refresh_touched)
    h.before_queue.append(home.queue_refreshes)
    return h


def desks(rules: Rules) -> Desks:
    """The factory of each step's :class:`Desk`, with the hooks above."""
    return Desks(rules, hooks())


def routes(
    rules: Rules, knowledge: kb.KnowledgeBase | None, *, email_links: bool = False
) -> Routes:
    """Each inbox event to its handler; the first route that matches takes it.
    ``email_links``: the desk can mail a link to verify an address (a mailbox and a public
    URL)."""
    r = Routes()
    # Email first: the mail is put on its thread (or recorded as noise) before anything reads
    # its chat id (bot/mail/threads.py).
    r.add(
        CustomerMessage,
        _email_thread,  # NEXT for a person's mail
        when=lambda e, p: e.mail is not None,
        name="email thread",
    )
    # Customers.
    r.add(
        CustomerMessage,
        lambda d, p: email_link.request(d, _ev(p, CustomerMessage), enabled=email_links),
        when=lambda e, p: email_link.is_email_link_request(e),
        name="link an e-mail address",
    )
    r.add(
        CustomerButton,
        lambda d, p: email_link.confirm(d, _ev(p, CustomerButton)),
        when=lambda e, p: email_link.is_confirmation(e),
        name="e-mail address verified",
    )
    r.add(
        CustomerMessage,
        lambda d, p: linking.offer_link(d, _ev(p, CustomerMessage)),
        when=lambda e, p: is_link_request(e),
        name="link request",
    )
    r.add(CustomerContact, lambda d, p: linking.contact_shared(d, _ev(p, CustomerContact)))
    r.add(
        CustomerMessage,
        _contact_for_link,  # NEXT unless it answers /link's button
        when=lambda e, p: e.shared == "contact" and e.channel == "telegram",
        name="someone else's contact after /link",
    )
    r.add(
        CustomerMessage,
        lambda d, p: answer_status(d, _ev(p, CustomerMessage), _lookup(p)),
        when=lambda e, p: p.lookup is not None,
        name="status lookup",
    )
    r.add(
        CustomerButton,
        lambda d, p: answer_status(d, _ev(p, CustomerButton), StatusRequest(None)),
        when=lambda e, p: e.data == STATUS_BUTTON and rules.status_lookup.enabled,
        name="my tickets",
    )
    r.add(
        CustomerMessage,
        _knowledge_first,  # NEXT when not answered
        when=lambda e, p: e.shared is None,  # a location, a contact, an order: for people
        name="knowledge base",
    )
    r.add(CustomerMessage, _customer_message, name="ticket")
    r.add(CustomerStart, lambda d, p: d.customer_start(_ev(p, CustomerStart)))
    r.add(CustomerEdit, lambda d, p: d.customer_edit(_ev(p, CustomerEdit)))
    r.add(
        CustomerButton,
        lambda d, p: kb.customer_button(d, _ev(p, CustomerButton)),
        when=lambda e, p: kb.is_kb_button(e.data),
    )
    r.add(CustomerButton, lambda d, p: d.customer_button(_ev(p, CustomerButton)))
    r.add(CustomerReaction, lambda d, p: d.customer_reaction(_ev(p, CustomerReaction)))
    r.add(
        CustomerNumberChanged,
        lambda d, p: d.customer_number_changed(_ev(p, CustomerNumberChanged)),
    )
    r.add(CustomerBlocked, lambda d, p: d.customer_blocked(_ev(p, CustomerBlocked)))
    r.add(DeliveryStatus, lambda d, p: d.delivery_status(_ev(p, DeliveryStatus)))
    # Agents.
    r.add(AgentMessage, lambda d, p: d.agent_message(_ev(p, AgentMessage)))
    r.add(
        AgentAction,
        lambda d, p: kb.agent_action(d, _ev(p, AgentAction), knowledge, p.hits or []),
        when=lambda e, p: e.action in kb.KB_ACTIONS,
    )
    r.add(
        AgentAction,
        lambda d, p: incident_action(d, _ev(p, AgentAction)),
        when=lambda e, p: e.incident_id is not None,
    )
    r.add(
        AgentAction,
        lambda d, p: controls.apply_action(d, _ev(p, AgentAction)),
        when=lambda e, p: e.action in controls.CONTROL_ACTIONS,
    )
    r.add(AgentAction, lambda d, p: d.agent_action(_ev(p, AgentAction)))
    r.add(SlashCommand, lambda d, p: answer_command(d, _ev(p, SlashCommand), p.report))
    r.add(HomeEvent, lambda d, p: home.home_event(d, _ev(p, HomeEvent)))
    r.add(ReplyModal, lambda d, p: reply_modal(d, _ev(p, ReplyModal)))
    r.add(AgentReply, lambda d, p: agent_reply(d, _ev(p, AgentReply)))
    r.add(HistoryModal, lambda d, p: history_modal(d, _ev(p, HistoryModal)))
    r.add(CustomerNote, lambda d, p: customer_note(d, _ev(p, CustomerNote)))
    r.add(Ignored, _nothing)  # recorded by the inbox for audit; nothing to do
    return r


def preparers(
    sessions: async_sessionmaker[AsyncSession],
    rules: Rules,
    knowledge: kb.KnowledgeBase | None,
    clock: Clock,
) -> Preparers:
    """Work done for an event outside its transaction: before the model, then after it (a
    supervisor's report, in a worker process: bot/reports/offloop.py)."""
    return Preparers(
        before_model=[status_lookup(rules), ReportPreparer(sessions, rules, clock)],
        after_model=[KbMatcher(sessions, rules, knowledge)],
    )


def renderers(sessions: async_sessionmaker[AsyncSession], rules: Rules, clock: Clock) -> Renderers:
    """What the outbox draws when it sends: incident cards, App Homes."""
    return Renderers(
        before_pacing=[IncidentRenderer(sessions, rules, clock)],
        before_send=[home.HomeRenderer(sessions, rules, clock)],
    )


def recovery(
    sessions: async_sessionmaker[AsyncSession], desks: Desks, clock: Clock
) -> RecoveryFactory:
    """A ticket's card that Slack says is gone is posted again, with the conversation so far."""

    def make(slack: ChannelSender, pace: Callable[[Outbound], Awaitable[None]]) -> Recovery:
        return CardRecovery(sessions, slack, desks, clock, pace)

    return make


def dispatcher(
    sessions: async_sessionmaker[AsyncSession],
    desks: Desks,
    classifier: Classifier,
    clock: Clock,
    inbox: DbInbox,
    *,
    knowledge: kb.KnowledgeBase | None = None,
    email_links: bool = False,
    **options: Any,
) -> Dispatcher:
    """The dispatcher with this desk's routes and preparers (``options``: its tuning)."""
    return Dispatcher(
        sessions,
        desks,
        classifier,
        clock,
        inbox,
        routes=routes(desks.rules, knowledge, email_links=email_links),
        preparers=preparers(sessions, desks.rules, knowledge, clock),
        **options,
    )


def outbox(
    sessions: async_sessionmaker[AsyncSession],
    senders: Mapping[str, ChannelSender],
    desks: Desks,
    clock: Clock,
    metrics: Metrics,
    **options: Any,
) -> OutboxSender:
    """The outbox with this desk's renderers and card recovery (``options``: its tuning)."""
    return OutboxSender(
        sessions,
        senders,
        desks,
        clock,
        metrics,
        renderers=renderers(sessions, desks.rules, clock),
        recovery=recovery(sessions, desks, clock),
        **options,
    )


@dataclass
class Jobs:
    """The loops that run on a timer (``bot/app.py`` spawns each)."""

    sweeper: AssignmentSweeper
    sla: SlaScheduler
    automations: AutomationScheduler
    digest: DigestScheduler
    retention: RawPurger
    roles: GroupRefresher | None
    presence: PresencePoller | None

    def named(self) -> list[tuple[str, Any]]:
        loops: list[tuple[str, Any]] = [
            ("assignment", self.sweeper),
            ("sla", self.sla),
            ("automations", self.automations),
            ("roles", self.roles),
            ("digest", self.digest),
            ("retention", self.retention),
            ("presence", self.presence),
        ]
        return [(name, job) for name, job in loops if job is not None]


def jobs(
    sessions: async_sessionmaker[AsyncSession],
    desks: Desks,
    clock: Clock,
    *,
    outbox_wakeup: asyncio.Event,
    slack: SlackAdapter | None,
) -> Jobs:
    """Every timer loop of the desk. ``slack``: the Slack adapter, for what only it can tell
    (the workspace's domain, user groups, presence)."""
    rules = desks.rules
    presence = None
    if rules.availability.assignment_presence == "slack" and slack is not None:
        presence = PresencePoller(sessions, rules, clock, slack.presence)
    return Jobs(
        sweeper=AssignmentSweeper(sessions, desks, clock, outbox_wakeup=outbox_wakeup),
        sla=SlaScheduler(sessions, desks, clock, outbox_wakeup=outbox_wakeup),
        automations=AutomationScheduler(sessions, desks, clock, outbox_wakeup=outbox_wakeup),
        digest=DigestScheduler(
            sessions,
            desks,
            clock,
            desk_tz(),
            workspace=None if slack is None else slack.workspace_domain,
            outbox_wakeup=outbox_wakeup,
        ),
        retention=RawPurger(sessions, rules, clock),
        roles=None
        if slack is None
        else GroupRefresher(sessions, rules, clock, slack.usergroup_members),
        presence=presence,
    )


# -- route handlers that are more than one call ----------------------------------------------


async def _knowledge_first(desk: Desk, prep: Prepared) -> object:
    """A message the knowledge base answers opens no ticket (yet)."""
    event = _ev(prep, CustomerMessage)
    assert prep.cls is not None
    hit = prep.hits[0] if prep.hits else None
    if await kb.before_ticket(desk, event, prep.cls, prep.detected, hit):
        return None
    return NEXT


async def _email_thread(desk: Desk, prep: Prepared) -> object:
    """A mail onto its thread; noise stops here, a person's mail goes on to the ticket."""
    return None if await thread_mail(desk, prep) else NEXT


async def _contact_for_link(desk: Desk, prep: Prepared) -> object:
    """Someone else's contact card right after the /link prompt is a wrong answer to it (the
    customer is asked for their own); anywhere else it is something they said."""
    event = _ev(prep, CustomerMessage)
    if not await desk.awaiting_contact(event.channel, event.chat_id):
        return NEXT
    refused = CustomerContact(
        channel=event.channel,
        external_id=event.external_id,
        conversation=event.conversation,
        received_at=event.received_at,
        sender=event.sender,
        chat_id=event.chat_id,
        phone="",
        own=False,
    )
    await linking.contact_shared(desk, refused)
    return None


async def _customer_message(desk: Desk, prep: Prepared) -> None:
    event = _ev(prep, CustomerMessage)
    assert prep.cls is not None
    ticket = await desk.customer_message(event, prep.cls, prep.detected)
    automations.heard(desk, ticket, prep.cls.details)  # the latest message's sentiment
    log.info("dispatcher.customer_message ticket=%d channel=%s", ticket.id, event.channel)


async def _nothing(desk: Desk, prep: Prepared) -> None:
    return None


def _ev(prep: Prepared, kind: type[E]) -> E:
    """The prepared event, as the kind its route was registered for."""
    assert isinstance(prep.event, kind)
    return prep.event


def _lookup(prep: Prepared) -> StatusRequest:
    assert prep.lookup is not None
    return prep.lookup
