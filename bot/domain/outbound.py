"""What the desk says, and the small typed set of ways a platform can refuse it.

The dispatcher never calls a platform. It writes :class:`Outbound` rows to the outbox in the
same transaction as the state change that caused them; the outbox sender hands each one to the
adapter of its channel (:class:`Sender` protocol) and maps the result with the errors below.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from bot.domain.events import Channel


class Button(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    text: str
    data: str  # callback data / reply id, at most 64 bytes (Telegram) or 256 chars (WhatsApp)


OutboundKind = Literal[
    "text",  # customer: a message with optional buttons
    "answer_callback",  # Telegram: answerCallbackQuery
    "edit_buttons",  # Telegram: editMessageReplyMarkup of message ``reply_to``; no buttons = none
    "slack_card",  # Slack: post the ticket card (top-level message)
    "slack_card_update",  # Slack: chat.update of the card
    "slack_thread",  # Slack: a message in the ticket's thread
    "slack_reaction",  # Slack: reactions.add on an agent's message
    "slack_response",  # Slack: reply to a slash command through its response_url
    "slack_post",  # Slack: a top-level message in a channel (an escalation for the whole team)
    "slack_charts",  # Slack: the PNG charts of ``chart`` (drawn by the sender) into a channel
    "slack_file",  # Slack: ``text`` as the file ``file_name`` in the DM with user ``destination``
    "slack_thread_file",  # Slack: the file ``file`` (a customer's) into the card's thread
    "slack_file_delete",  # Slack: files.delete of file ``reply_to`` (forgetting a customer)
    "file",  # customer: the file ``file`` (an agent's), ``text`` as its caption
    "slack_home",  # Slack: views.publish of user ``destination``'s Home, drawn when sent
    "slack_view_update",  # Slack: views.update of view ``destination`` with ``view``
    # Slack: chat.postEphemeral to ``user`` in channel ``destination`` (thread ``reply_to``)
    "slack_ephemeral",
    "template",  # WhatsApp: the approved template ``template`` (outside the 24-hour window)
]


class TemplateMessage(BaseModel):
    """An approved WhatsApp template: its name, language code and body parameters in order.
    ``purpose`` is the rules.yaml key it was configured under (reply_waiting, rating_request)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    language: str
    parameters: tuple[str, ...] = ()
    purpose: str = ""


class FileRef(BaseModel):
    """Where a relayed file is, not its bytes: the outbox fetches them when it sends.

    ``source`` is the platform holding the file (Telegram file_id, WhatsApp media id, Slack
    ``url_private``). ``kind`` is what it is there (photo, document, ...) for a file going to
    Slack, and how it is sent (photo/document on Telegram, image/document on WhatsApp) for a
    file going to a customer: decided, with the size limits, by :mod:`bot.domain.files`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: Channel
    file_id: str
    kind: str
    name: str | None = None
    mime_type: str | None = None
    size: int | None = None
    url: str | None = None  # Slack: url_private


class FileContent(BaseModel):
    """A relayed file's bytes, fetched by the outbox just before the send (never stored)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    data: bytes
    name: str
    mime_type: str


class Outbound(BaseModel):
    """One thing to say. ``destination`` is a chat id, wa_id or Slack channel id.

    For ``slack_thread`` and ``slack_card_update`` the card's ``ts`` is only known once the card
    was posted, so the outbox sender fills ``reply_to`` from the ticket (``ticket_id``) just
    before it calls the adapter: adapters always get a complete message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: Channel
    kind: OutboundKind
    destination: str
    text: str = ""
    buttons: tuple[Button, ...] = ()
    blocks: tuple[dict[str, Any], ...] = ()  # Slack Block Kit, already rendered
    ticket_id: int | None = None
    reply_to: str | None = None  # platform message id to reply to / react on / thread under
    emoji: str | None = None  # slack_reaction
    user: str | None = None  # slack_ephemeral: the one person who sees it
    callback_query_id: str | None = None  # answer_callback (``text``: a short notice shown)
    # slack_charts: what the charts show (bot.reports.charts.chart_data), a few KB of JSON.
    # The outbox row carries these numbers, not the PNGs: rows stay small, the charts are drawn
    # from the very figures the answer showed, and drawing happens in the sender, off the loop.
    chart: dict[str, Any] | None = None
    file: FileRef | None = None  # file, slack_thread_file
    # The bytes of ``file``, filled in by the outbox at send time; never written to the row.
    content: FileContent | None = Field(default=None, exclude=True)
    view: dict[str, Any] | None = None  # slack_view_update: the whole view (a modal)
    file_name: str | None = None  # slack_file
    file_title: str | None = None  # slack_file
    # Telegram text: a reply keyboard with one "share my phone number" button labelled so, or
    # the removal of such a keyboard once it has served.
    ask_contact: str | None = None
    remove_keyboard: bool = False
    # The outbox row being sent, set by the outbox (not stored in the row): a Slack post carries
    # it in its message metadata, so the desk can find a post whose outcome it never heard.
    outbox_id: int | None = None
    # About an incident's card (bot/incidents/desk.py): the card and its lists are rendered when
    # sent,
    # from the incident as it is then; ``incident_list``: the list of tickets attached since.
    incident_id: int | None = None
    incident_list: bool = False
    template: TemplateMessage | None = None  # template


class Delivery(BaseModel):
    """What the platform said when it accepted a message."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    platform_message_id: str | None = None  # Telegram message_id, wamid, Slack ts


class DeliveryError(Exception):
    """Base of the typed platform refusals. ``detail`` is the platform's own error string."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RetryAfter(DeliveryError):
    """429: try again after ``seconds``."""

    def __init__(self, seconds: float, detail: str = "rate limited") -> None:
        super().__init__(detail)
        self.seconds = seconds


class Forbidden(DeliveryError):
    """The customer blocked the bot, or the bot was removed: never retried."""


class BadRequest(DeliveryError):
    """The platform rejected the message itself: retrying would not help."""


class WindowClosed(BadRequest):
    """WhatsApp: the customer last wrote more than 24 hours ago, so only a template passes
    (131047, or the desk's own check before sending). Not a dead end: ``bot/window`` keeps an
    agent's reply and tells the customer with the ``reply_waiting`` template."""


class TemplateRefused(BadRequest):
    """WhatsApp refused a template: unknown name or language (132001), wrong parameter count
    (132000), paused (132015) or disabled (132016)... Shown in the thread and in /healthz."""


class Unavailable(DeliveryError):
    """5xx, timeout, connection refused: retried with backoff and jitter."""


class ChannelSender(Protocol):
    """Implemented by each adapter. Raises one of the :class:`DeliveryError` subclasses."""

    async def send(self, message: Outbound) -> Delivery: ...


# What a send-time renderer (an incident's card, an App Home) may say instead of a message.


class NothingToSay(Exception):
    """Nothing is left to send (a batch whose tickets all left the incident before it was
    posted): the row is done, with nothing sent."""


class NotPosted(Exception):
    """What the row is about has no post to go with yet, or never got one (an incident card
    with no ts): the row fails with this reason."""
