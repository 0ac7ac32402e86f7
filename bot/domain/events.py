"""Normalised events: what adapters write to the inbox and the dispatcher reads back.

Every platform payload is parsed once, at the edge, into one of these. They are pydantic
models so an event survives the round trip through the inbox's JSON column unchanged.
The dedupe key of an event is ``(channel, external_id)``; ``conversation`` is the key the
dispatcher keeps order by (one customer chat, or one Slack thread).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Channel = Literal["telegram", "whatsapp", "slack", "email"]
CustomerChannel = Literal["telegram", "whatsapp", "email"]
Shared = Literal["location", "venue", "contact", "order", "poll", "unsupported"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Sender(_Frozen):
    external_id: str  # Telegram user id, WhatsApp wa_id
    name: str = ""
    username: str | None = None
    phone: str | None = None
    language: str | None = None  # IETF tag as the platform gives it ("en", "zh-hans")


class Attachment(_Frozen):
    kind: Literal["photo", "document", "image", "audio", "video", "sticker", "voice", "other"]
    file_id: str  # the platform's id (Telegram file_id, WhatsApp media id)
    name: str | None = None
    mime_type: str | None = None
    size: int | None = None


class SlackFile(_Frozen):
    """A file an agent shared in Slack (a ``file_share`` message's ``files`` entry)."""

    id: str
    name: str = ""
    mimetype: str | None = None
    size: int | None = None
    url_private: str = ""  # fetched with the bot token in the Authorization header


class _Event(_Frozen):
    channel: Channel
    external_id: str  # dedupe key within the channel
    conversation: str  # order key: events of one conversation are handled in arrival order
    received_at: datetime = Field(default_factory=utcnow)
    # When the customer sent it, as the platform says (WhatsApp's ``timestamp``): WhatsApp's
    # 24-hour window counts from here (bot/window). None when the platform gave no time.
    sent_at: datetime | None = None


class MailFacts(_Frozen):
    """What an email says about itself beyond its words (adapters/email): how it threads, and
    whether it is noise the desk records but never answers.

    ``noise``: why the mail is not a person writing (an auto-reply, a bounce, the desk's own
    mail, a sender over the rate): recorded in the sender's open ticket, never acknowledged.
    ``bounced``: the address a delivery-status notification says could not be reached.
    """

    message_id: str  # without the angle brackets
    subject: str = ""
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    noise: str | None = None
    bounced: str | None = None
    full_text: str = ""  # the body before quotes and signature were stripped (clipped)


class CustomerMessage(_Event):
    """A customer wrote (text and/or attachments). Joins or opens a ticket."""

    kind: Literal["customer_message"] = "customer_message"
    channel: CustomerChannel
    sender: Sender
    chat_id: str  # where replies go: Telegram chat id, WhatsApp wa_id
    platform_message_id: str  # Telegram message_id, WhatsApp wamid
    text: str = ""
    attachments: tuple[Attachment, ...] = ()
    # Set when the customer shared something other than words or a file (a location, a contact
    # card, an order, a poll, or something WhatsApp could not deliver): ``text`` then describes
    # it for the agents, and the knowledge base does not try to answer it.
    shared: Shared | None = None
    mail: MailFacts | None = None  # email only: threading headers, noise


class CustomerStart(_Event):
    """Telegram ``/start``: greet the customer; no ticket until they say something."""

    kind: Literal["customer_start"] = "customer_start"
    channel: CustomerChannel
    sender: Sender
    chat_id: str


class CustomerContact(_Event):
    """The customer shared a phone number (Telegram's contact button). ``own`` is true when
    Telegram vouches it is the sender's own number (the contact's user id is theirs)."""

    kind: Literal["customer_contact"] = "customer_contact"
    channel: CustomerChannel
    sender: Sender
    chat_id: str
    phone: str
    own: bool


class CustomerEdit(_Event):
    """The customer edited a message they sent earlier."""

    kind: Literal["customer_edit"] = "customer_edit"
    channel: CustomerChannel
    sender: Sender
    chat_id: str
    platform_message_id: str  # id of the edited message
    text: str


class CustomerButton(_Event):
    """The customer pressed a button we sent (inline keyboard / WhatsApp reply button).

    ``data`` is the callback data we put on the button, e.g. ``rate:42:5``.
    """

    kind: Literal["customer_button"] = "customer_button"
    channel: CustomerChannel
    sender: Sender
    chat_id: str
    data: str
    callback_query_id: str | None = None  # Telegram: must be answered
    tapped_message_id: str | None = None  # platform id of the message the button is on
    title: str = ""  # the button's label as the customer saw it (WhatsApp), when known


class CustomerReaction(_Event):
    """The customer put an emoji reaction on a message in their chat (theirs or the desk's).
    An empty ``emoji`` means they took their reaction away."""

    kind: Literal["customer_reaction"] = "customer_reaction"
    channel: CustomerChannel
    sender: Sender
    chat_id: str
    reacted_to: str  # platform id of the message reacted to
    emoji: str = ""


class CustomerNumberChanged(_Event):
    """WhatsApp: the customer moved their account to a new phone number (a ``system`` message
    ``user_changed_number``). Replies must go to the new number from now on."""

    kind: Literal["customer_number_changed"] = "customer_number_changed"
    channel: CustomerChannel
    sender: Sender  # as known before the change (the old number)
    chat_id: str  # the old number
    new_id: str  # the new wa_id
    text: str = ""  # WhatsApp's own words ("User A changed from … to …")


class CustomerBlocked(_Event):
    """Telegram: the customer blocked the bot (``blocked``) or unblocked (restarted) it
    (``my_chat_member`` in their private chat)."""

    kind: Literal["customer_blocked"] = "customer_blocked"
    channel: CustomerChannel
    sender: Sender
    chat_id: str
    blocked: bool


class DeliveryStatus(_Event):
    """WhatsApp's report on a message we sent: sent, delivered, read or failed."""

    kind: Literal["delivery_status"] = "delivery_status"
    channel: CustomerChannel
    platform_message_id: str
    status: Literal["sent", "delivered", "read", "failed"]
    error: str | None = None


class AgentMessage(_Event):
    """A human posted in a Slack channel the desk watches (usually in a card's thread)."""

    kind: Literal["agent_message"] = "agent_message"
    channel: Literal["slack"] = "slack"
    slack_channel: str
    user_id: str
    ts: str
    thread_ts: str | None = None
    text: str = ""
    user_name: str = ""  # their Slack display name, when the adapter could read it
    files: tuple[SlackFile, ...] = ()  # a file_share message: what the agent shared
    broadcast: bool = False  # "Also send to #channel" (thread_broadcast): said to colleagues


class AgentAction(_Event):
    """An agent clicked a button on a ticket card."""

    kind: Literal["agent_action"] = "agent_action"
    channel: Literal["slack"] = "slack"
    action: Literal[
        "claim",
        "resolve",
        "transfer",
        "priority",
        "status",
        "reassign",
        "tags",
        "intent",
        "kb_suggest",  # "Suggest articles" on the card (bot/selfservice/kb.py)
        "kb_send",  # "Send to customer" under a suggested article; value: the article's slug
        "incident_resolve",
        "incident_close",
        "incident_reply",
    ]
    ticket_id: int
    user_id: str
    user_name: str = ""
    slack_channel: str
    message_ts: str
    team: str | None = None  # transfer: the team chosen
    value: str | None = None  # priority, status, intent: the option; reassign: the user id
    values: tuple[str, ...] = ()  # tags: every tag now chosen (none clears them)
    target_name: str = ""  # reassign: the chosen agent's display name
    response_url: str | None = None  # where an ephemeral answer to the clicker goes
    # Incident actions (bot/incidents/desk.py): the incident, and for incident_reply the reply by
    # language ("en" → text); ``ticket_id`` is 0 for them.
    incident_id: int | None = None
    texts: dict[str, str] = Field(default_factory=dict)


class HomeEvent(_Event):
    """Someone opened the app's Home tab, or used one of its buttons (bot/workspace/home.py)."""

    kind: Literal["home"] = "home"
    channel: Literal["slack"] = "slack"
    action: Literal["opened", "available", "away", "claim"]
    user_id: str
    user_name: str = ""
    ticket_id: int | None = None  # claim: the ticket


class ReplyModal(_Event):
    """The Reply modal was opened (the adapter opened it with the trigger_id, empty), or an
    agent picked a macro or typed in it: the desk draws it again (views.update)."""

    kind: Literal["reply_modal"] = "reply_modal"
    channel: Literal["slack"] = "slack"
    ticket_id: int
    user_id: str
    user_name: str = ""
    view_id: str
    macro: str | None = None  # the macro picked, if any
    text: str | None = None  # what is typed so far (None: nothing yet)
    picked: bool = False  # this event is the pick of ``macro``: its text goes into the box
    revision: str | None = None  # the text box's block_id suffix as Slack shows it now


class HistoryModal(_Event):
    """The History modal was opened (empty, by the adapter): the desk fills it."""

    kind: Literal["history_modal"] = "history_modal"
    channel: Literal["slack"] = "slack"
    ticket_id: int
    user_id: str
    view_id: str
    team_domain: str = ""  # the workspace's subdomain, for links to cards


class CustomerNote(_Event):
    """The History modal's "Save note": the agents' note about a customer."""

    kind: Literal["customer_note"] = "customer_note"
    channel: Literal["slack"] = "slack"
    ticket_id: int
    customer_id: int
    user_id: str
    text: str


class AgentReply(_Event):
    """An agent sends something to the customer deliberately: the Reply modal's Send
    (``ticket_id``, ``macro``), or the "Send to customer" shortcut on a thread message
    (``slack_channel``, ``thread_ts``, ``ts``)."""

    kind: Literal["agent_reply"] = "agent_reply"
    channel: Literal["slack"] = "slack"
    source: Literal["modal", "shortcut"]
    user_id: str
    user_name: str = ""
    text: str
    ticket_id: int | None = None
    macro: str | None = None
    slack_channel: str = ""
    thread_ts: str | None = None
    ts: str | None = None  # the shortcut's message
    from_bot: bool = False  # the shortcut was used on an app's message (the desk's own)
    response_url: str | None = None


class SlashCommand(_Event):
    """A supervisor or agent ran a slash command (``/desk ...``)."""

    kind: Literal["slash_command"] = "slash_command"
    channel: Literal["slack"] = "slack"
    command: str
    text: str = ""
    user_id: str
    slack_channel: str
    response_url: str | None = None
    team_domain: str = ""  # the workspace's subdomain (acme for acme.slack.com): card links


class Ignored(_Event):
    """A payload kind the desk does not handle. Recorded for audit, never processed."""

    kind: Literal["ignored"] = "ignored"
    reason: str


Event = Annotated[
    CustomerMessage
    | CustomerStart
    | CustomerEdit
    | CustomerContact
    | CustomerButton
    | CustomerReaction
    | CustomerNumberChanged
    | CustomerBlocked
    | DeliveryStatus
    | AgentMessage
    | AgentAction
    | SlashCommand
    | HomeEvent
    | ReplyModal
    | AgentReply
    | HistoryModal
    | CustomerNote
    | Ignored,
    Field(discriminator="kind"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def event_to_json(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json")


def event_from_json(data: Any) -> Event:
    return EVENT_ADAPTER.validate_python(data)
