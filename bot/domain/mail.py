"""Pure rules of email threading, shared by the adapter (parsing, composing) and the desk
(bot/mail): the ticket token in subjects, the subject a reply continues, a thread's chat id."""

from __future__ import annotations

import hashlib
import re

# "[#123]", or with a word before the number in any language: "[Ticket #123]", "[Заявка #123]".
TICKET_TOKEN = re.compile(r"\[[^\[\]#]{0,24}#(\d{1,12})\]")
REPLY_PREFIX = re.compile(
    r"^\s*((re|aw|sv|fw|fwd|wg|tr|rv|odp|antw|vs|ynt|回复|答复|回覆)\s*[:：]\s*)+", re.I
)
SUBJECT_KEPT = 300


def ticket_token(subject: str) -> int | None:
    """The ticket number a subject names (``Re: Refund [#123]``), the last one if several."""
    found = TICKET_TOKEN.findall(subject or "")
    return int(found[-1]) if found else None


def base_subject(subject: str) -> str:
    """A subject without Re:/Fwd: (in several languages) and without the ticket token."""
    subject = TICKET_TOKEN.sub("", subject or "")
    return " ".join(REPLY_PREFIX.sub("", subject).split())[:SUBJECT_KEPT]


def reply_subject(subject: str, ticket_id: int | None, fallback: str = "Your request") -> str:
    """``Re: <their subject> [#123]``: the token lets a reply from any mail program find the
    ticket even when it drops In-Reply-To."""
    base = base_subject(subject) or fallback
    token = f" [#{ticket_id}]" if ticket_id is not None else ""
    return f"Re: {base}{token}"


def chat_key(address: str, message_id: str) -> str:
    """The chat id of a new email thread: where replies go (the address), and which thread
    (a short digest of the mail that opened it), so a new subject is a new ticket."""
    return f"{address}#{hashlib.sha256(message_id.encode()).hexdigest()[:10]}"


def conversation_of(address: str) -> str:
    """The inbox's order key for one sender's mail: per address, but not the address itself
    (the key outlives a customer's erasure; bot/customers/privacy.py finds it by this too)."""
    return f"email:{hashlib.sha256(address.encode()).hexdigest()[:24]}"


def address_of(chat_id: str) -> str:
    """The address part of a thread's chat id."""
    return chat_id.rpartition("#")[0] or chat_id
