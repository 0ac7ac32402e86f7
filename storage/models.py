"""The desk's tables. Alembic migrations in ``storage/migrations`` create them; never create_all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.crypto import Address, EncryptedJSON, EncryptedText


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which stores naive text) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# BigInteger ids on PostgreSQL; SQLite only autoincrements a column declared INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # Sealed under DESK_DATA_KEY when one is set (storage/crypto.py), as every EncryptedText.
    name: Mapped[str] = mapped_column(EncryptedText(), default="")
    language: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(
        EncryptedText()
    )  # agents' free text (the History modal)


class Identity(Base):
    """A customer as one platform knows them. One customer may have several."""

    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        Index("ix_identities_chat", "channel", "chat_id"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    channel: Mapped[str] = mapped_column(String(20))
    # The platform's address of the person (a WhatsApp id is their phone number, an e-mail
    # identity their address): sealed deterministically with a key (storage/crypto.Address).
    external_id: Mapped[str] = mapped_column(Address())
    chat_id: Mapped[str] = mapped_column(Address())
    username: Mapped[str | None] = mapped_column(EncryptedText())
    phone: Mapped[str | None] = mapped_column(EncryptedText())
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the customer last wrote, by the platform's clock: WhatsApp's 24-hour window counts
    # from it (bot/window). None until they write after migration 0014.
    last_inbound_at: Mapped[datetime | None]


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_customer_status", "customer_id", "status"),
        Index("ix_tickets_slack", "slack_channel", "slack_ts"),
        Index("ix_tickets_team_status", "team", "status"),
        Index("ix_tickets_assignee_status", "assignee_id", "status"),
        Index("ix_tickets_chat", "channel", "chat_id"),  # a chat's latest ticket
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    channel: Mapped[str] = mapped_column(String(20))  # where the customer wrote
    chat_id: Mapped[str] = mapped_column(Address())  # where replies go
    status: Mapped[str] = mapped_column(String(20))  # new|open|pending|resolved|closed
    priority: Mapped[str] = mapped_column(String(10))
    priority_reasons: Mapped[list[Any]] = mapped_column(default=list)
    classification: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON(), default=dict)
    model_version: Mapped[str] = mapped_column(String(60), default="")
    team: Mapped[str] = mapped_column(String(60), default="")
    slack_channel: Mapped[str] = mapped_column(String(40), default="")
    slack_ts: Mapped[str | None] = mapped_column(String(40))  # the card; its thread is the chat
    assignee_id: Mapped[str | None] = mapped_column(String(40))
    assignee_name: Mapped[str | None] = mapped_column(String(100))
    assigned_by: Mapped[str | None] = mapped_column(String(40))  # "desk" (automatic) or a user
    waiting_reason: Mapped[str | None] = mapped_column(String(200))  # why nobody has it yet
    sla: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # clocks as last computed
    language: Mapped[str | None] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(EncryptedText(), default="")
    rating: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    first_response_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(40))  # who pressed Resolve
    # The incident it is attached to (bot/incidents/desk.py); ``incident_only``: shown only there,
    # no
    # card of its own.
    incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", name="fk_tickets_incident"), index=True
    )
    incident_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The outbox row of the incident thread's list post that named it (once per incident).
    incident_listed: Mapped[int | None] = mapped_column(BigInteger)


class Incident(Base):
    """Many customers writing about the same thing at once: one card for them all."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_team_status", "team", "status"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    team: Mapped[str] = mapped_column(String(60))
    slack_channel: Mapped[str] = mapped_column(String(40))
    slack_ts: Mapped[str | None] = mapped_column(String(40))  # its card, once posted
    status: Mapped[str] = mapped_column(String(12))  # open|resolved|closed|merged
    keyword: Mapped[str | None] = mapped_column(String(200))  # the urgent keyword shared
    intent: Mapped[str | None] = mapped_column(String(100))
    centroid: Mapped[list[Any] | None] = mapped_column(JSON)  # mean vector of its tickets
    summary: Mapped[str] = mapped_column(EncryptedText(), default="")  # quotes a first message
    why: Mapped[str] = mapped_column(Text, default="")
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(40))
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    reply_at: Mapped[datetime | None]  # the latest Reply to all affected: progress counts from it


class SurgeSignature(Base):
    """What detection knows of a new ticket, shared by processes and restarts."""

    __tablename__ = "surge_signatures"
    __table_args__ = (Index("ix_surge_signatures_team_at", "team", "at"),)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    team: Mapped[str] = mapped_column(String(60))
    at: Mapped[datetime]
    keyword: Mapped[str | None] = mapped_column(String(200))
    intent: Mapped[str | None] = mapped_column(String(100))
    vector: Mapped[list[Any] | None] = mapped_column(JSON)


class SurgeLock(Base):
    """Locked (FOR UPDATE) while a team's new ticket is matched: one decision at a time."""

    __tablename__ = "surge_locks"
    team: Mapped[str] = mapped_column(String(60), primary_key=True)
    updated_at: Mapped[datetime]


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_platform", "channel", "platform_message_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    direction: Mapped[str] = mapped_column(String(10))  # in | out | note | system
    author: Mapped[str] = mapped_column(String(100))  # "customer", a Slack user id, "desk"
    channel: Mapped[str] = mapped_column(String(20))  # platform of platform_message_id
    # A WhatsApp message id (wamid) embeds the customer's number: sealed like an address.
    platform_message_id: Mapped[str | None] = mapped_column(Address())
    slack_ts: Mapped[str | None] = mapped_column(String(40))  # the agent's message, if any
    text: Mapped[str] = mapped_column(EncryptedText(), default="")
    attachments: Mapped[list[Any]] = mapped_column(EncryptedJSON(), default=list)
    delivery: Mapped[str | None] = mapped_column(
        String(20)
    )  # out: pending|sent|delivered|read|failed
    delivery_error: Mapped[str | None] = mapped_column(Text)
    edits: Mapped[list[Any]] = mapped_column(
        EncryptedJSON(), default=list
    )  # earlier texts, oldest first
    purpose: Mapped[str | None] = mapped_column(String(20))  # desk messages: ack, rating_prompt…
    created_at: Mapped[datetime]


class TicketEvent(Base):
    """The audit trail: every state, assignee and priority change, and why."""

    __tablename__ = "ticket_events"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(30))  # created|status|assignee|priority|rating|edit
    actor: Mapped[str] = mapped_column(String(100))
    from_value: Mapped[str | None] = mapped_column(Text)
    to_value: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime]


class Agent(Base):
    """A Slack user who takes tickets: their availability and when they last got one."""

    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # Slack user id
    available: Mapped[bool] = mapped_column(Boolean, default=False)  # agents start away
    away_since: Mapped[datetime | None]  # set when they go away; their grace period runs from it
    presence: Mapped[str | None] = mapped_column(String(10))  # Slack's, when polled
    last_assigned_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class HomeView(Base):
    """Someone who opened the app's Home tab: the desk keeps their Home current from then on
    (views.publish on every change that concerns them), and nobody else's."""

    __tablename__ = "home_views"
    user_id: Mapped[str] = mapped_column(String(40), primary_key=True)  # Slack user id
    opened_at: Mapped[datetime]
    published_at: Mapped[datetime | None]


class TeamPointer(Base):
    """Round robin's place in each team's rotation: the last agent given a ticket."""

    __tablename__ = "team_pointers"
    team: Mapped[str] = mapped_column(String(60), primary_key=True)
    last_agent: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime]


class SlaTimer(Base):
    """When a ticket's next SLA moment is due; claimed by the scheduler like the outbox."""

    __tablename__ = "sla_timers"
    __table_args__ = (
        Index("ix_sla_timers_due", "due_at"),
        Index("ix_sla_timers_lease_owner", "lease_owner"),  # the heartbeat's owners, every second
    )
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    due_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(120))
    updated_at: Mapped[datetime]


class SlaFiring(Base):
    """A warning, breach or escalation that fired; ``key`` makes each fire exactly once."""

    __tablename__ = "sla_firings"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    target: Mapped[str] = mapped_column(String(20))
    what: Mapped[str] = mapped_column(String(20))
    level: Mapped[int | None] = mapped_column(Integer)
    due_at: Mapped[datetime | None]
    fired_at: Mapped[datetime]


class AuditEntry(Base):
    """A privileged action: who did what, when, on what."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]]


class Digest(Base):
    """A daily digest queued for posting: once per day (in ``DESK_TZ``) by the primary key."""

    __tablename__ = "digests"
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD in DESK_TZ
    channel: Mapped[str] = mapped_column(String(40))
    queued_at: Mapped[datetime]
    queued_by: Mapped[str] = mapped_column(String(120))


class RoleGroup(Base):
    """The members of a Slack user group named in ``roles:``, as last read from Slack."""

    __tablename__ = "role_groups"
    group_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    members: Mapped[list[str]] = mapped_column(JSON)
    refreshed_at: Mapped[datetime]
    error: Mapped[str | None] = mapped_column(String(80))


class StatusLookup(Base):
    """A customer asked about their tickets ("status 123", /status, the My tickets button).

    The record of every lookup, and the rate limit's memory: counted per customer over a
    window, in the database so that it holds across restarts and processes."""

    __tablename__ = "status_lookups"
    __table_args__ = (Index("ix_status_lookups_customer_at", "customer_id", "at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    channel: Mapped[str] = mapped_column(String(20))
    via: Mapped[str] = mapped_column(String(20))  # message | button
    asked: Mapped[int | None] = mapped_column(BigInteger)  # the number asked; None: the list
    answer: Mapped[str] = mapped_column(String(20))  # list | found | unknown | not_theirs | limited
    at: Mapped[datetime]


class KbArticle(Base):
    """One knowledge-base article as indexed: its vector, and the hash of the file it came
    from, so a start re-embeds only what changed (bot/selfservice/kb.py)."""

    __tablename__ = "kb_articles"
    slug: Mapped[str] = mapped_column(String(80), primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    language: Mapped[str] = mapped_column(String(20))
    tags: Mapped[list[Any]]
    url: Mapped[str | None] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    encoder: Mapped[str] = mapped_column(String(40))  # fingerprint/precision the vector is of
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, unit length
    indexed_at: Mapped[datetime]


class KbSuggestion(Base):
    """An article offered to a customer before a ticket, and what came of it.

    ``outcome``: pending (waiting for their answer), solved (a deflection: no ticket),
    person ("Talk to a person"), wrote_again (a further message). ``event`` and
    ``classification`` are the first message as the dispatcher read it, so the ticket made
    later starts with exactly that message, priority and all."""

    __tablename__ = "kb_suggestions"
    __table_args__ = (
        Index("ix_kb_suggestions_chat", "channel", "chat_id", "outcome"),
        Index("ix_kb_suggestions_ticket", "ticket_id"),
        Index("ix_kb_suggestions_outcome_at", "outcome", "created_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    channel: Mapped[str] = mapped_column(String(20))
    chat_id: Mapped[str] = mapped_column(Address())
    article: Mapped[str] = mapped_column(String(80))  # slug
    title: Mapped[str] = mapped_column(String(300))
    score: Mapped[float] = mapped_column(Float)
    event: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON())
    classification: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON())
    language: Mapped[str | None] = mapped_column(String(20))
    outcome: Mapped[str] = mapped_column(String(20))  # pending|solved|person|wrote_again
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]


class InboxRow(Base):
    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        Index("ix_inbox_claim", "status", "conversation", "id"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(Address())  # the dedupe key: a wamid has the number
    conversation: Mapped[str] = mapped_column(Address())  # order key: one customer's chat
    kind: Mapped[str] = mapped_column(String(30))
    payload: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON())
    raw: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON())
    status: Mapped[str] = mapped_column(String(12))  # pending|processing|done|failed|ignored
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(120))  # the process holding the claim
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]


class OutboxRow(Base):
    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_claim", "status", "destination_key", "id"),
        Index("ix_outbox_platform_message", "platform_message_id"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(String(20))
    destination_key: Mapped[str] = mapped_column(Address())  # order + rate-limit key
    payload: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON())  # an Outbound
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id"))
    # pending|sending|sent|failed|unknown, and for WhatsApp's window (bot/window): held (an
    # agent's reply waiting for the customer to write) or skipped (a notice that could not go).
    status: Mapped[str] = mapped_column(String(12))
    # 0 urgent … 3 low for a new ticket's card, 2 for everything else: claimed lowest first.
    rank: Mapped[int] = mapped_column(SmallInteger, default=2, server_default="2")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(120))  # the process holding the claim
    last_error: Mapped[str | None] = mapped_column(Text)
    platform_message_id: Mapped[str | None] = mapped_column(Address())  # a wamid: the number
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class Process(Base):
    """A running desk and its last heartbeat; a stale one is dead and its leases are taken."""

    __tablename__ = "processes"
    __table_args__ = (Index("ix_processes_heartbeat", "heartbeat_at"),)
    owner: Mapped[str] = mapped_column(String(120), primary_key=True)  # host:pid:boot id
    host: Mapped[str] = mapped_column(String(80))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


class RateBucket(Base):
    """A platform rate limit's token bucket, shared by the processes of a fleet on PostgreSQL
    (bot/delivery/ratelimit.py): ``slack:C0…`` per channel, ``tg:<chat>``, ``tg:*``, ``wa:*``."""

    __tablename__ = "rate_buckets"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    stamp: Mapped[datetime]  # the database's clock when ``tokens`` was last worked out


class AutomationAnchors(Base):
    """When each running anchor of a ticket's time rules started (``automations:``), kept up
    to date by the desk as the ticket's events happen (bot/automations)."""

    __tablename__ = "automation_anchors"
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    started: Mapped[dict[str, Any]]  # anchor → ISO start
    updated_at: Mapped[datetime]


class AutomationTimer(Base):
    """A time rule due on a ticket: one row per (rule, ticket, anchor start), claimed by the
    automation scheduler like the SLA timers (``FOR UPDATE SKIP LOCKED`` and a lease)."""

    __tablename__ = "automation_timers"
    __table_args__ = (
        UniqueConstraint("rule", "ticket_id", "anchor_start", name="uq_automation_timers_key"),
        Index("ix_automation_timers_due", "due_at"),
        Index("ix_automation_timers_lease_owner", "lease_owner"),  # as the SLA timers'
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    rule: Mapped[str] = mapped_column(String(100))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    anchor: Mapped[str] = mapped_column(String(30))
    anchor_start: Mapped[datetime]
    due_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime]


class AutomationFiring(Base):
    """A rule that fired on a ticket, written in the transaction of its actions. The unique key
    (rule, ticket, anchor start or the event's id) makes each firing happen at most once."""

    __tablename__ = "automation_firings"
    __table_args__ = (
        UniqueConstraint("rule", "ticket_id", "key", name="uq_automation_firings_key"),
        Index("ix_automation_firings_fired_at", "fired_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    rule: Mapped[str] = mapped_column(String(100))
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    key: Mapped[str] = mapped_column(String(200))
    depth: Mapped[int] = mapped_column(Integer, default=0)
    fired_at: Mapped[datetime]


class AutomationSuspension(Base):
    """A rule that fired ``per_ticket_per_day`` times on one ticket: it fires no more there."""

    __tablename__ = "automation_suspensions"
    rule: Mapped[str] = mapped_column(String(100), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    at: Mapped[datetime]
    why: Mapped[str] = mapped_column(Text, default="")


class EmailMailbox(Base):
    """How far the desk has read a mailbox (adapters/email): the highest UID taken into the
    inbox, for the mailbox's UIDVALIDITY (a new one means the UIDs were renumbered: the desk
    then reads the unseen mail again, and Message-IDs keep it from doubling anything)."""

    __tablename__ = "email_mailboxes"
    key: Mapped[str] = mapped_column(String(300), primary_key=True)  # user@host/mailbox
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class EmailThread(Base):
    """One email conversation: the chat id its tickets have (address#key), the address replies
    go to and the subject they continue."""

    __tablename__ = "email_threads"
    chat_id: Mapped[str] = mapped_column(Address(), primary_key=True)
    address: Mapped[str] = mapped_column(EncryptedText())
    subject: Mapped[str] = mapped_column(EncryptedText(), default="")
    created_at: Mapped[datetime]


class EmailMessageId(Base):
    """Every Message-ID the desk received or sent, and its thread: a reply naming one of them
    (In-Reply-To, References) joins that thread's ticket."""

    __tablename__ = "email_message_ids"
    __table_args__ = (Index("ix_email_message_ids_chat", "chat_id", "created_at"),)
    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    chat_id: Mapped[str] = mapped_column(Address())
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    created_at: Mapped[datetime]
