"""Answers from the knowledge base: before a ticket (deflection) and on an agent's request.

- The index: :class:`KnowledgeBase` reads ``kb/*.md`` (nlp/kb.py), embeds with the local encoder
  only the articles whose file hash (or the encoder) changed since the stored index, and keeps
  the vectors in ``kb_articles`` (shared by every desk process) and in memory (searched per
  message with one dot product; only the question is encoded).
- Deflection: a customer's first message of a new conversation that matches an article above
  ``kb.suggest_at`` is answered with the article and two buttons. The suggestion, with the
  message as read, is a ``kb_suggestions`` row written in the same transaction as the answer,
  so a crash between the suggestion and the customer's reply loses nothing: "That solved it"
  records a deflection, "Talk to a person" or any further message makes the ticket from the
  stored first message, as if it had just arrived, with the suggestion on its card.
- Agents: "Suggest articles" on a card answers privately with the best articles for the
  conversation, each with "Send to customer", which sends it as the agent's reply.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.tickets import Desk
from bot.domain.classifier import Classification
from bot.domain.events import (
    AgentAction,
    CustomerButton,
    CustomerMessage,
    event_from_json,
    event_to_json,
)
from bot.domain.language import choose_language, primary
from bot.domain.mrkdwn import escape, person
from bot.domain.outbound import Button, Outbound
from bot.domain.rules import Rules, Texts
from bot.domain.tickets import ACTIVE, EDITABLE_BUTTONS
from nlp.encoder import Encoder
from nlp.kb import EXTRACT_CHARS, Article, Hit, Index, extract, read_articles, unit
from storage.crypto import address_forms
from storage.models import Customer, KbArticle, KbSuggestion, Message, Ticket
from storage.statements import Statement, address_in

log = logging.getLogger("deskbot.kb")

SOLVED, PERSON = "kb:solved:", "kb:person:"
KB_ACTIONS = ("kb_suggest", "kb_send")


def encoder_key(encoder: Encoder) -> str:
    return f"{encoder.fingerprint}/{'int8' if encoder.quantized else 'f32'}"


@dataclass(frozen=True, slots=True)
class SyncReport:
    added: int
    changed: int
    removed: int
    unchanged: int

    def __str__(self) -> str:
        return (
            f"{self.added} added, {self.changed} changed, {self.removed} removed, "
            f"{self.unchanged} unchanged"
        )


def kb_folder(rules: Rules, rules_path: Path) -> Path:
    folder = Path(rules.kb.dir)
    return folder if folder.is_absolute() else rules_path.resolve().parent / folder


class KnowledgeBase:
    """The articles and their vectors in memory; :meth:`sync` brings both up to date."""

    def __init__(self, folder: Path, encoder: Encoder) -> None:
        self.folder = folder
        self.encoder = encoder
        self.key = encoder_key(encoder)
        self.index = Index()

    @classmethod
    async def load(
        cls, folder: Path, encoder: Encoder | None = None, encoder_dir: str | None = None
    ) -> KnowledgeBase:
        """``encoder``: the model's, when the desk runs it (one encoder in memory); otherwise
        the int8 encoder of ``encoder_dir`` (``DESK_ENCODER``, default all-MiniLM-L6-v2, as
        the shipped heads use it) is loaded for the knowledge base alone."""
        if encoder is None:
            encoder = await asyncio.to_thread(Encoder.load, encoder_dir, quantize=True)
        return cls(folder, encoder)

    def article(self, slug: str) -> Article | None:
        return next((a for a in self.index.articles if a.slug == slug), None)

    async def sync(self, sessions: async_sessionmaker[AsyncSession], now: Any) -> SyncReport:
        """Read the folder, embed what changed, store it, load the whole index into memory."""
        articles = await asyncio.to_thread(read_articles, self.folder)
        try:
            report = await self._sync(sessions, articles, now)
        except IntegrityError:
            # Another desk process indexed the same articles at the same moment: theirs stand.
            report = await self._sync(sessions, articles, now)
        log.info("kb.indexed folder=%s %s", self.folder, str(report).replace(", ", " "))
        return report

    async def _sync(
        self, sessions: async_sessionmaker[AsyncSession], articles: list[Article], now: Any
    ) -> SyncReport:
        async with sessions.begin() as s:
            stored = {row.slug: row for row in (await s.scalars(select(KbArticle))).all()}
            stale = [
                a
                for a in articles
                if a.slug not in stored
                or stored[a.slug].content_hash != a.content_hash
                or stored[a.slug].encoder != self.key
            ]
            fresh: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = {}
            if stale:
                texts = [a.embedding_text() for a in stale]
                vectors = await asyncio.to_thread(self._embed, texts)
                fresh = {a.slug: vectors[i] for i, a in enumerate(stale)}
            wanted = {a.slug for a in articles}
            gone = [slug for slug in stored if slug not in wanted]
            if gone:
                await s.execute(delete(KbArticle).where(KbArticle.slug.in_(gone)))
            rows: list[np.ndarray[Any, np.dtype[np.float32]]] = []
            for a in articles:
                if a.slug in fresh:
                    row = stored.get(a.slug) or KbArticle(slug=a.slug)
                    row.title, row.language, row.tags, row.url = (
                        a.title,
                        a.language,
                        list(a.tags),
                        a.url,
                    )
                    row.body, row.content_hash, row.encoder = a.body, a.content_hash, self.key
                    row.vector = fresh[a.slug].astype(np.float32).tobytes()
                    row.indexed_at = now
                    s.add(row)
                    rows.append(fresh[a.slug])
                else:
                    rows.append(np.frombuffer(stored[a.slug].vector, dtype=np.float32))
        dim = self.encoder.dim
        matrix = np.vstack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
        self.index = Index(list(articles), unit(matrix))
        added = sum(1 for a in stale if a.slug not in stored)
        return SyncReport(added, len(stale) - added, len(gone), len(articles) - len(stale))

    def _embed(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        return unit(self.encoder.sentence(self.encoder.encode(texts)))

    def search_language(self, language: str | None, default: str) -> str:
        """The articles' language to search: the message's when some article is in it, else
        the desk's default (a short English question is sometimes read as German)."""
        code = primary(language)
        return code if code and code in self.index.languages() else primary(default) or "en"

    async def search(self, text: str, language: str, k: int) -> list[Hit]:
        if not text.strip() or not len(self.index):
            return []
        vector = (await asyncio.to_thread(self._embed, [text]))[0]
        return self.index.search(vector, language, k)


# -- deflection, before a ticket -------------------------------------------------------------


def deflectable(cls: Classification, rules: Rules) -> bool:
    """Urgent or angry messages go to a person at once, whatever an article says."""
    if cls.priority == "urgent":
        return False
    anger = cls.details.get("anger")
    if isinstance(anger, int | float) and anger >= rules.priority.anger.at_least:
        return False
    scores = cls.details.get("sentiment_scores")
    if isinstance(scores, dict):
        negative = scores.get("negative")
        if (
            isinstance(negative, int | float)
            and negative >= rules.priority.sentiment.negative_at_least
        ):
            return False
    return True


async def opens_ticket(desk: Desk, ev: CustomerMessage) -> bool:
    """Would this message start a new ticket (not join or reopen one)?"""
    latest = await desk.latest_ticket(ev.channel, ev.chat_id)
    if latest is None:
        return True
    if latest.status in ACTIVE:
        return False
    window = timedelta(hours=desk.rules.tickets.reopen_window_hours)
    reopens = (
        latest.status == "resolved"
        and latest.resolved_at is not None
        and desk.now - latest.resolved_at <= window
    )
    return not reopens


_PENDING = Statement(  # every customer message reads it: built once (storage/statements.py)
    select(KbSuggestion)
    .where(
        KbSuggestion.channel == bindparam("channel"),
        address_in(KbSuggestion.chat_id, "chat"),
        KbSuggestion.outcome == "pending",
    )
    .order_by(KbSuggestion.id.desc())
    .limit(1)
    .with_for_update()
)


async def pending_suggestion(desk: Desk, channel: str, chat_id: str) -> KbSuggestion | None:
    found: KbSuggestion | None = await _PENDING.scalar(
        desk.s, channel=channel, chat=address_forms(chat_id)
    )
    return found


# A WhatsApp message with reply buttons carries at most 1024 characters (protocols.md); the
# extract gives way so that the title and the link always fit whole.
BODY_MAX = 1024


def answer_text(texts: Texts, article: Article) -> str:
    link = f"\n{article.url}" if article.url else ""
    frame = texts.kb_answer.format(title=article.title, extract="", link=link)
    room = max(BODY_MAX - len(frame), 60)
    return texts.kb_answer.format(
        title=article.title, extract=extract(article.body, min(room, EXTRACT_CHARS)), link=link
    )


async def before_ticket(
    desk: Desk,
    ev: CustomerMessage,
    cls: Classification,
    detected: str | None,
    hit: Hit | None,
) -> bool:
    """Called for every customer message before the ticket logic. True: answered from the
    knowledge base, no ticket. A message after a pending suggestion first turns that
    suggestion into the ticket (the later message then joins it)."""
    pending = await pending_suggestion(desk, ev.channel, ev.chat_id)
    if pending is not None:
        await escalate(desk, pending, "wrote_again")
        return False
    rules = desk.rules
    if (
        hit is None
        or not rules.kb.enabled
        or hit.score < rules.kb.suggest_at
        or ev.attachments
        or not deflectable(cls, rules)
        or not await opens_ticket(desk, ev)
    ):
        return False
    language = choose_language(ev.sender.language, detected, ev.text)
    kept = await desk.kept_language(ev, detected)
    ident = await desk.identity(ev.channel, ev.sender, ev.chat_id, kept)
    customer = await desk.s.get_one(Customer, ident.customer_id)
    texts = rules.texts.for_language(language or customer.language)
    suggestion = KbSuggestion(
        customer_id=customer.id,
        channel=ev.channel,
        chat_id=ev.chat_id,
        article=hit.article.slug,
        title=hit.article.title,
        score=round(hit.score, 4),
        event=event_to_json(ev),
        classification={
            "priority": cls.priority,
            "reasons": list(cls.reasons),
            "model_version": cls.model_version,
            "details": cls.details,
        },
        language=detected,
        outcome="pending",
        created_at=desk.now,
    )
    desk.s.add(suggestion)
    await desk.s.flush()
    desk.fx.say(
        Outbound(
            channel=ev.channel,
            kind="text",
            destination=ev.chat_id,
            text=answer_text(texts, hit.article),
            buttons=(
                Button(text=texts.kb_solved, data=f"{SOLVED}{suggestion.id}"),
                Button(text=texts.kb_person, data=f"{PERSON}{suggestion.id}"),
            ),
        )
    )
    desk.decided(
        "kb.suggested suggestion=%d article=%s score=%.3f channel=%s",
        suggestion.id,
        hit.article.slug,
        hit.score,
        ev.channel,
    )
    return True


OUTCOME_WORDS = {"person": "asked for a person", "wrote_again": "wrote again"}


async def escalate(desk: Desk, suggestion: KbSuggestion, outcome: str) -> Ticket:
    """The ticket the suggestion held back, from the first message exactly as it came."""
    ev = event_from_json(suggestion.event)
    assert isinstance(ev, CustomerMessage)
    c = suggestion.classification
    cls = Classification(
        priority=str(c["priority"]),
        reasons=tuple(c.get("reasons") or ()),
        model_version=str(c.get("model_version") or ""),
        details=dict(c.get("details") or {}),
    )
    suggestion.outcome = outcome
    suggestion.decided_at = desk.now
    ticket = await desk.customer_message(ev, cls, suggestion.language)
    suggestion.ticket_id = ticket.id
    await desk.s.flush()
    desk.thread(
        ticket,
        f"📚 Before this ticket the customer was sent the article *{escape(suggestion.title)}*"
        f" (similarity {suggestion.score:.2f}); they {OUTCOME_WORDS.get(outcome, outcome)}.",
    )
    await desk.refresh_card(ticket)  # the card was drawn before it knew of the suggestion
    desk.decided(
        "kb.escalated suggestion=%d ticket=%d outcome=%s", suggestion.id, ticket.id, outcome
    )
    return ticket


def is_kb_button(data: str) -> bool:
    return data.startswith((SOLVED, PERSON))


async def customer_button(desk: Desk, ev: CustomerButton) -> None:
    """ "That solved it" or "Talk to a person" under a suggestion."""
    prefix = SOLVED if ev.data.startswith(SOLVED) else PERSON
    number = ev.data[len(prefix) :]
    suggestion = None
    if number.isascii() and number.isdigit() and len(number) <= 18:
        suggestion = await desk.s.get(KbSuggestion, int(number), with_for_update=True)
    ours = suggestion is not None and (suggestion.channel, suggestion.chat_id) == (
        ev.channel,
        ev.chat_id,
    )
    if suggestion is None or not ours:
        answer_callback(desk, ev)
        return  # forged or someone else's: nothing happens
    customer = await desk.s.get_one(Customer, suggestion.customer_id)
    texts = desk.rules.texts.for_language(customer.language)
    if suggestion.outcome != "pending":
        if ev.callback_query_id:
            answer_callback(desk, ev, texts.kb_spent)
            take_buttons_off(desk, ev)
        else:  # WhatsApp cannot answer a tap otherwise
            say(desk, ev, texts.kb_spent)
        return
    answer_callback(desk, ev)
    take_buttons_off(desk, ev)
    if prefix == SOLVED:
        suggestion.outcome = "solved"
        suggestion.decided_at = desk.now
        say(desk, ev, texts.kb_thanks)
        desk.decided("kb.deflected suggestion=%d article=%s", suggestion.id, suggestion.article)
        return
    await escalate(desk, suggestion, "person")


def answer_callback(desk: Desk, ev: CustomerButton, notice: str = "") -> None:
    if ev.callback_query_id:
        desk.fx.say(
            Outbound(
                channel=ev.channel,
                kind="answer_callback",
                destination=ev.chat_id,
                callback_query_id=ev.callback_query_id,
                text=notice[:200],
            )
        )


def take_buttons_off(desk: Desk, ev: CustomerButton) -> None:
    if ev.channel in EDITABLE_BUTTONS and ev.tapped_message_id:
        desk.fx.say(
            Outbound(
                channel=ev.channel,
                kind="edit_buttons",
                destination=ev.chat_id,
                reply_to=ev.tapped_message_id,
            )
        )


def say(desk: Desk, ev: CustomerButton, text: str) -> None:
    desk.fx.say(Outbound(channel=ev.channel, kind="text", destination=ev.chat_id, text=text))


# -- agents: Suggest articles, Send to customer ----------------------------------------------


async def conversation_text(
    sessions: async_sessionmaker[AsyncSession], ticket_id: int
) -> tuple[str, str | None] | None:
    """The customer's latest words on a ticket (what to search with) and its language."""
    async with sessions() as s:
        ticket = await s.get(Ticket, ticket_id)
        if ticket is None:
            return None
        said = (
            await s.scalars(
                select(Message.text)
                .where(Message.ticket_id == ticket_id, Message.direction == "in")
                .order_by(Message.id.desc())
                .limit(3)
            )
        ).all()
        return " ".join(reversed([t for t in said if t])), ticket.language


def respond(
    desk: Desk, ev: AgentAction, text: str, blocks: tuple[dict[str, Any], ...] = ()
) -> None:
    if ev.response_url:
        desk.fx.say(
            Outbound(
                channel="slack",
                kind="slack_response",
                destination=ev.response_url,
                text=text,
                blocks=blocks,
            )
        )


def suggestions_blocks(ticket_id: int, hits: list[Hit]) -> tuple[dict[str, Any], ...]:
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"📚 Articles for ticket #{ticket_id}:"},
        }
    ]
    for n, hit in enumerate(hits, 1):
        a = hit.article
        title = f"<{a.url}|{escape(a.title)}>" if a.url else escape(a.title)
        blocks.append(
            {
                "type": "section",
                "block_id": f"kb_article.{n}",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*{title}* · similarity {hit.score:.2f} · {a.language}\n"
                    f"{escape(a.extract)}"[:3000],
                },
            }
        )
        blocks.append(
            {
                "type": "actions",
                "block_id": f"kb_send.{n}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": f"kb_send.{n}",
                        "text": {"type": "plain_text", "text": "Send to customer"},
                        "value": f"{ticket_id}:{a.slug}",
                    }
                ],
            }
        )
    return tuple(blocks)


async def agent_action(
    desk: Desk, ev: AgentAction, knowledge: KnowledgeBase | None, hits: list[Hit]
) -> None:
    ticket = await desk.s.get(Ticket, ev.ticket_id, with_for_update=True)
    if ticket is None:
        return
    if knowledge is None or not desk.rules.kb.enabled:
        respond(desk, ev, "This desk has no knowledge base (kb.enabled, or no articles in kb/).")
        return
    if ev.action == "kb_suggest":
        if not hits:
            respond(desk, ev, f"No article comes close to ticket #{ticket.id}'s conversation.")
            return
        listed = ", ".join(h.article.title for h in hits)
        respond(
            desk,
            ev,
            f"Articles for ticket #{ticket.id}: {listed}",
            suggestions_blocks(ticket.id, hits),
        )
        desk.decided("kb.agent_suggested ticket=%d by=%s n=%d", ticket.id, ev.user_id, len(hits))
        return
    article = knowledge.article(ev.value or "")
    if article is None:
        respond(desk, ev, "That article is no longer in the knowledge base; nothing was sent.")
        return
    if ticket.status not in ACTIVE:
        respond(desk, ev, f"Ticket #{ticket.id} is {ticket.status}; nothing was sent.")
        return
    if ticket.assignee_id not in (None, ev.user_id):
        respond(
            desk,
            ev,
            f"Ticket #{ticket.id} is assigned to <@{ticket.assignee_id}>: only they answer the"
            " customer. Nothing was sent.",
        )
        return
    await send_article(desk, ticket, ev, article)


async def send_article(desk: Desk, ticket: Ticket, ev: AgentAction, article: Article) -> None:
    """The article as the agent's reply: a ticket message, through the outbox, like a reply
    typed in the thread (claims an unassigned ticket the same way)."""
    who = person(ev.user_id, ev.user_name)
    if ticket.assignee_id is None:
        desk.history(ticket, "assignee", ev.user_id, None, ev.user_id, "sent an article")
        ticket.assignee_id = ev.user_id
        ticket.assignee_name = ev.user_name or None
        ticket.assigned_by = ev.user_id
        ticket.waiting_reason = None
        desk.thread(ticket, f"🙋 {who} claimed this ticket.")
    texts = desk.rules.texts.for_language(ticket.language)
    text = answer_text(texts, article)
    name = ticket.assignee_name
    shown = f"{name}: {text}" if desk.rules.texts.show_agent_name and name else text
    msg = Message(
        ticket_id=ticket.id,
        direction="out",
        author=ev.user_id,
        channel=ticket.channel,
        text=shown,
        delivery="pending",
        created_at=desk.now,
    )
    desk.s.add(msg)
    await desk.s.flush()
    if ticket.first_response_at is None:
        ticket.first_response_at = desk.now
    if ticket.status in ("new", "open"):
        desk.set_status(ticket, "pending", ev.user_id, "agent sent an article; waiting on customer")
    ticket.updated_at = desk.now
    desk.tell_customer(ticket, shown, message=msg)
    desk.thread(ticket, f"📚 {who} sent the article *{escape(article.title)}* to the customer.")
    await desk.refresh_card(ticket)
    respond(desk, ev, f"Sent “{article.title}” to the customer of ticket #{ticket.id}.")
    desk.decided("kb.article_sent ticket=%d article=%s by=%s", ticket.id, article.slug, ev.user_id)
