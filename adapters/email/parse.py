"""One mail's bytes → one desk event: who wrote, what is new in it, how it threads, and whether
it is noise (an auto-reply, a bounce, the desk's own mail) that is recorded but never answered.

Pure functions, no I/O: the intake loop (adapters/email/imap.py) hands each fetched mail here.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Any, Literal

import html2text
from mailparser_reply import EmailReplyParser
from mailparser_reply.constants import MAIL_LANGUAGES

from adapters._common import digest_id
from bot.delivery.inbox import storable
from bot.domain.events import Attachment, CustomerMessage, Ignored, MailFacts, Sender
from bot.domain.mail import chat_key, conversation_of

MESSAGE_ID = re.compile(r"<([^<>\s]{1,190})>")  # longer ones are not ids we can key on
NOISE_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
DAEMONS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
FULL_TEXT_MAX = 20_000  # the unstripped body kept for the agents ("Full original")
TEXT_MAX = 8_000  # what the card and thread get of the new text
MB = 1024 * 1024
# Every language the quote parser knows: a reply from Germany quotes "Am … schrieb …".
_REPLIES = EmailReplyParser(languages=list(MAIL_LANGUAGES))

AttachmentKind = Literal["document", "image", "audio", "video"]


def message_ids(value: str | None) -> tuple[str, ...]:
    """The Message-IDs in a header (``<a@b> <c@d>``), without angle brackets, in order."""
    return tuple(MESSAGE_ID.findall(value or ""))


def html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: Slack wraps
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.protect_links = True
    return converter.handle(html).strip()


def new_text(body: str) -> str:
    """The part of a mail's body the customer just wrote: quoted history ("On … wrote:", "> …",
    Outlook's "From: … Sent: …" block) and the signature taken off, in the parser's languages."""
    body = body.replace("\r\n", "\n").strip()
    if not body:
        return ""
    try:
        replies = _REPLIES.read(body).replies
    except Exception:  # a parser bug must not lose the mail: the whole body is kept then
        return body
    if not replies:
        return body
    latest = str(replies[0].body).strip()
    return latest or body


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    return "" if value is None else " ".join(str(value).split())


def noise_reason(msg: Message, sender: str, own_address: str) -> str | None:
    """Why this mail is not a person writing, or None. Such mail is never acknowledged: an
    auto-reply answered by the desk's acknowledgement is the start of a mail loop."""
    auto = _header(msg, "Auto-Submitted").lower()
    if auto and auto.split(";")[0].strip() != "no":
        return f"an automatic mail (Auto-Submitted: {auto[:40]})"
    precedence = _header(msg, "Precedence").lower()
    if precedence in NOISE_PRECEDENCE:
        return f"an automatic mail (Precedence: {precedence})"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"):
        if name == "X-Auto-Response-Suppress":
            continue  # asks *us* not to auto-reply; a person may well have written it
        if msg.get(name) is not None:
            return f"an auto-reply ({name})"
    if sender == own_address:
        return "the desk's own address"
    if sender.partition("@")[0].lower() in DAEMONS:
        return "a mail server's report (mailer-daemon)"
    return None


def bounce_of(msg: Message) -> tuple[str | None, str, tuple[str, ...]]:
    """A delivery-status notification (RFC 3464): the address that failed, why, and the
    Message-IDs of the mail that bounced (from its returned headers), or ``(None, "", ())``."""
    if msg.get_content_type() != "multipart/report":
        return None, "", ()
    failed: str | None = None
    why = ""
    original: tuple[str, ...] = ()
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            fields = _status_fields(part)
            action = fields.get("action", "").lower()
            recipient = fields.get("final-recipient") or fields.get("original-recipient") or ""
            if recipient and action in ("failed", ""):
                failed = parseaddr(recipient.partition(";")[2] or recipient)[1].lower() or None
                why = fields.get("diagnostic-code", "") or fields.get("status", "")
        elif ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            original = original or _returned_ids(part)
    return failed, why.partition(";")[2].strip() or why, original


def _status_fields(part: Message) -> dict[str, str]:
    fields: dict[str, str] = {}
    payload = part.get_payload()
    blocks: Iterable[Any] = payload if isinstance(payload, list) else [payload]
    for block in blocks:
        if isinstance(block, Message):
            items = list(block.items())
        else:
            text = block if isinstance(block, str) else ""
            items = [(k, v) for k, _, v in (line.partition(":") for line in text.splitlines()) if v]
        for key, value in items:
            fields.setdefault(key.strip().lower(), " ".join(str(value).split()))
    return fields


def _returned_ids(part: Message) -> tuple[str, ...]:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return message_ids(_header(payload[0], "Message-ID"))
    text = part.get_payload(decode=True)
    if isinstance(text, bytes):
        found = re.search(rb"^Message-ID:\s*(<[^>\r\n]+>)", text, re.I | re.M)
        if found:
            return message_ids(found.group(1).decode("ascii", "replace"))
    return ()


def body_text(msg: EmailMessage) -> str:
    """The readable body: the plain-text part, else the HTML part as text."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):  # an unknown charset, a broken encoding
        raw = part.get_payload(decode=True)
        content = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    if not isinstance(content, str):
        return ""
    if part.get_content_type() == "text/html":
        return html_to_text(content)
    return content


def _kind(mime: str) -> AttachmentKind:
    major = mime.partition("/")[0]
    if major == "image":
        return "image"
    if major == "audio":
        return "audio"
    if major == "video":
        return "video"
    return "document"


def attachments_of(
    msg: EmailMessage, file_prefix: str, max_bytes: int
) -> tuple[list[Attachment], list[str]]:
    """The mail's files as attachments the outbox fetches again by ``file_prefix/N`` (the
    mail's place in the mailbox and the file's index), and a line for each one over the size
    limit, which is not relayed."""
    files: list[Attachment] = []
    refused: list[str] = []
    for index, part in enumerate(msg.iter_attachments()):
        mime = part.get_content_type()
        if mime.startswith("multipart/"):
            continue
        data = part.get_payload(decode=True)
        size = len(data) if isinstance(data, bytes) else 0
        name = part.get_filename() or None
        if size > max_bytes:
            refused.append(
                f"📎 {name or mime} ({size / MB:.1f} MB) was not relayed: email attachments are"
                f" taken up to {max_bytes // MB} MB."
            )
            continue
        files.append(
            Attachment(
                kind=_kind(mime),
                file_id=f"{file_prefix}/{index}",
                name=name,
                mime_type=mime,
                size=size,
            )
        )
    return files, refused


def _sent_at(msg: Message) -> datetime | None:
    try:
        when = parsedate_to_datetime(_header(msg, "Date"))
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def parse_mail(
    raw: bytes,
    own_address: str,
    *,
    file_prefix: str,
    max_attachment_bytes: int,
) -> CustomerMessage | Ignored:
    """One mail as the desk's event. Mail without a usable sender is kept as Ignored."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    ids = message_ids(_header(msg, "Message-ID"))
    message_id = ids[0] if ids else digest_id("mail", raw).removeprefix("mail:") + "@no-id"
    try:
        found = getaddresses([_header(msg, "Reply-To") or _header(msg, "From")])
    except (TypeError, ValueError, IndexError):
        found = []
    name, address = found[0] if found else ("", "")
    address = address.strip().lower()
    if "@" not in address or len(address) > 88 or any(c.isspace() for c in address):
        return Ignored(
            channel="email",
            external_id=message_id,
            conversation="email:ignored",
            reason="mail without a usable sender address"
            if len(address) <= 88
            else "sender address longer than 88 characters",
        )
    from_address = parseaddr(_header(msg, "From"))[1].strip().lower() or address
    subject = _header(msg, "Subject")[:400]
    noise = noise_reason(msg, from_address, own_address.lower())
    bounced, why, returned = bounce_of(msg)
    if bounced is not None:
        noise = f"a bounce: mail to {bounced} could not be delivered" + (
            f" ({why[:200]})" if why else ""
        )
    body = body_text(msg)
    text = new_text(body) if noise is None else body.strip()
    files, refused = attachments_of(msg, file_prefix, max_attachment_bytes)
    if len(text) > TEXT_MAX:
        text = text[: TEXT_MAX - 1] + "…"
    if refused:
        text = "\n".join([text, *refused]) if text else "\n".join(refused)
    facts = MailFacts(
        message_id=message_id,
        subject=subject,
        in_reply_to=message_ids(_header(msg, "In-Reply-To")),
        references=message_ids(_header(msg, "References")) + returned,
        noise=noise,
        bounced=bounced,
        full_text=storable(body[:FULL_TEXT_MAX]),
    )
    return CustomerMessage(
        channel="email",
        external_id=message_id,
        conversation=conversation_of(address),
        sender=Sender(external_id=address, name=storable(name.strip()[:200])),
        chat_id=chat_key(address, message_id),
        platform_message_id=message_id,
        text=storable(text) or (subject if not files else ""),
        attachments=tuple(files),
        sent_at=_sent_at(msg),
        mail=facts,
    )


def audit_record(raw: bytes, uid: int, uidvalidity: int, mailbox: str) -> dict[str, Any]:
    """What the inbox keeps of a mail for audit: where it was and its headers (the body is
    in the event; attachments stay on the server)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    headers = {
        k: str(v)[:500]
        for k, v in msg.items()
        if k.lower()
        in (
            "from",
            "to",
            "cc",
            "reply-to",
            "subject",
            "date",
            "message-id",
            "in-reply-to",
            "references",
            "auto-submitted",
            "precedence",
            "content-type",
        )
    }
    kept: dict[str, Any] = storable(
        {
            "mailbox": mailbox,
            "uidvalidity": uidvalidity,
            "uid": uid,
            "size": len(raw),
            "headers": headers,
        }
    )
    return kept
