"""One outgoing mail: ``multipart/alternative`` (plain text and simple HTML), a Message-ID on
the desk's domain, the customer's thread continued (In-Reply-To, References, ``Re: … [#123]``),
``Auto-Submitted: auto-replied`` on what the desk wrote itself, and an agent's file attached.

Pure: the adapter (adapters/email/__init__.py) sends what this builds.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

from bot.domain.mail import reply_subject
from bot.domain.outbound import FileContent

LINK = re.compile(r"https?://[^\s<>\"]+")


def message_id_for(outbox_id: int | None, destination: str, text: str, domain: str) -> str:
    """The same Message-ID for every attempt at one outbox row (so a mail sent again after a
    crash is recognisably the same mail), unique across rows and threads."""
    seed = f"{outbox_id}|{destination}|{text if outbox_id is None else ''}"
    digest = hashlib.sha256(seed.encode()).hexdigest()[:16]
    return f"desk.{outbox_id if outbox_id is not None else 'x'}.{digest}@{domain}"


def as_html(text: str, links: Sequence[tuple[str, str]] = ()) -> str:
    """Simple HTML of the plain text: escaped, line breaks kept, links clickable; ``links``
    (label, url) as a row of links under it (the rating's five choices)."""
    escaped = html.escape(text)
    escaped = LINK.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped)
    body = escaped.replace("\n", "<br>\n")
    if links:
        row = " &nbsp; ".join(
            f'<a href="{html.escape(url, quote=True)}">{html.escape(label)}</a>'
            for label, url in links
        )
        body += f"<br>\n<p>{row}</p>"
    page = f'<html><body><div style="font-family:sans-serif">{body}</div></body></html>'
    return f"<!DOCTYPE html>\n{page}\n"


def compose(
    *,
    sender: str,
    sender_name: str,
    to: str,
    subject: str,
    ticket_id: int | None,
    text: str,
    message_id: str,
    in_reply_to: str | None,
    references: Sequence[str],
    automatic: bool,
    when: datetime,
    links: Sequence[tuple[str, str]] = (),
    attachment: FileContent | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = formataddr((sender_name, sender)) if sender_name else sender
    msg["To"] = to
    msg["Subject"] = reply_subject(subject, ticket_id)
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if automatic:
        # RFC 3834: a mail the desk wrote by itself; well-behaved responders do not answer it,
        # and the desk itself never answers mail that carries it.
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    plain = text
    if links:
        plain += "\n\n" + "\n".join(f"{label}: {url}" for label, url in links)
    msg.set_content(plain)
    msg.add_alternative(as_html(text, links), subtype="html")
    if attachment is not None:
        maintype, _, subtype = attachment.mime_type.partition("/")
        msg.make_mixed()
        msg.add_attachment(
            attachment.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=attachment.name,
        )
    return msg
