"""What self-service works out before an event's transaction: is a message a status lookup,
and which knowledge-base articles answer it (one encoder call, a few milliseconds, never
under a database lock). Listed in ``bot/wiring.py`` as the dispatcher's preparers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.domain.customer_requests import is_link_request, status_request_of
from bot.domain.events import AgentAction, CustomerMessage
from bot.domain.language import choose_language
from bot.domain.prepared import Prepared
from bot.domain.rules import Rules
from bot.domain.tickets import ACTIVE
from bot.selfservice.kb import KnowledgeBase, conversation_text
from nlp.kb import Hit
from storage.models import Ticket


def status_lookup(rules: Rules) -> Callable[[Prepared], Awaitable[None]]:
    """A message that is only a status lookup (``/status 12``, ``#12``) opens no ticket."""

    async def prepare(prep: Prepared) -> None:
        if isinstance(prep.event, CustomerMessage):
            prep.lookup = status_request_of(prep.event, rules)

    return prepare


class KbMatcher:
    """The articles for an event: the best one for a message that may open a conversation,
    and the suggestions an agent asked for on a card (``kb_suggest``)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        rules: Rules,
        knowledge: KnowledgeBase | None,
    ) -> None:
        self._sessions = sessions
        self._rules = rules
        self._knowledge = knowledge

    async def __call__(self, prep: Prepared) -> None:
        event = prep.event
        if isinstance(event, CustomerMessage) and prep.lookup is None:
            prep.hits = await self._for_message(event, prep.detected)
        elif isinstance(event, AgentAction) and event.action == "kb_suggest":
            prep.hits = await self._for_ticket(event.ticket_id)

    async def _for_message(self, event: CustomerMessage, detected: str | None) -> list[Hit]:
        knowledge = self._knowledge
        if knowledge is None or not self._rules.kb.enabled or not event.text.strip():
            return []
        if event.attachments or is_link_request(event):
            return []
        async with self._sessions() as session:
            latest = await session.scalar(
                select(Ticket)
                .where(Ticket.channel == event.channel, Ticket.chat_id == event.chat_id)
                .order_by(Ticket.id.desc())
                .limit(1)
            )
        if latest is not None and latest.status in ACTIVE:
            return []  # it joins that ticket: no need to encode it for the knowledge base
        language = knowledge.search_language(
            choose_language(event.sender.language, detected, event.text),
            self._rules.texts.default_language,
        )
        if language not in self._rules.kb.languages:
            return []  # the encoder does not read this language well enough to answer alone
        return await knowledge.search(event.text, language, 1)

    async def _for_ticket(self, ticket_id: int | None) -> list[Hit]:
        knowledge = self._knowledge
        if knowledge is None or not self._rules.kb.enabled or ticket_id is None:
            return []
        said = await conversation_text(self._sessions, ticket_id)
        if said is None:
            return []
        text, language = said
        where = knowledge.search_language(language, self._rules.texts.default_language)
        return await knowledge.search(text, where, self._rules.kb.agent_suggestions)
