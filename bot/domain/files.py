"""Files both ways: the platforms' size limits, checked before anything is fetched or sent.

Pure decisions, no I/O. A customer's photo or document goes into the card's thread (Slack takes
up to 1 GB; the limit that bites is Telegram's 20 MB for a bot's downloads); an agent's file
goes to the customer as a photo/image when the platform takes it so, else as a document. A file
no platform limit lets through is not dropped: the caller writes why into the card's thread.

Limits (protocols.md and the platforms' documentation):

* Telegram Bot API: ``getFile`` downloads up to 20 MB; ``sendPhoto`` up to 10 MB,
  ``sendDocument`` up to 50 MB (multipart uploads).
* WhatsApp Cloud API media: image (JPEG, PNG) 5 MB; document 100 MB; audio and video 16 MB;
  sticker 100 KB. Anything else goes as a document.
* Slack: ``files.getUploadURLExternal`` refuses more than 1 GB (``file_upload_size_restricted``).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.tickets import CHANNEL_NAME

MB = 1024 * 1024

TELEGRAM_DOWNLOAD_MAX = 20 * MB
TELEGRAM_PHOTO_MAX = 10 * MB
TELEGRAM_DOCUMENT_MAX = 50 * MB
WHATSAPP_IMAGE_MAX = 5 * MB
WHATSAPP_DOCUMENT_MAX = 100 * MB
# Most mail servers refuse a message over 25 MB, and base64 makes a file a third larger: 18 MB
# of file is what reliably arrives (DESK_EMAIL_MAX_ATTACHMENT_MB can only lower it further).
EMAIL_ATTACHMENT_MAX = 18 * MB
SLACK_UPLOAD_MAX = 1024 * MB

# GIFs go as documents: as a photo Telegram would keep only a still frame.
TELEGRAM_PHOTO_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
WHATSAPP_IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})
PLATFORM = {**CHANNEL_NAME, "slack": "Slack"}


def size_text(size: int | None) -> str:
    if size is None:
        return "size unknown"
    if size >= MB:
        return f"{size / MB:.1f} MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} bytes"


def describe(kind: str, name: str | None, size: int | None = None) -> str:
    """ "a document (report.pdf, 25.0 MB)": how the thread names a file."""
    article = "an" if kind[:1] in "aeiou" else "a"
    details = [d for d in (name, size_text(size) if size is not None else None) if d]
    return f"{article} {kind}" + (f" ({', '.join(details)})" if details else "")


@dataclass(frozen=True, slots=True)
class Plan:
    """How a file goes out: ``kind`` to send it as, or ``refused`` with the reason."""

    kind: str = ""
    refused: str | None = None
    limit: str = ""  # the limit that refused it, for people ("20 MB")


def inbound_plan(channel: str, kind: str, size: int | None) -> Plan:
    """A customer's file on ``channel``: can the desk fetch it and put it into Slack?"""
    if channel == "telegram" and size is not None and size > TELEGRAM_DOWNLOAD_MAX:
        return Plan(
            refused=f"Telegram lets bots download files up to {TELEGRAM_DOWNLOAD_MAX // MB} MB",
            limit=f"{TELEGRAM_DOWNLOAD_MAX // MB} MB",
        )
    if size is not None and size > SLACK_UPLOAD_MAX:
        return Plan(refused="Slack takes files up to 1 GB", limit="1 GB")
    return Plan(kind=kind)


def outbound_plan(channel: str, mime_type: str | None, size: int | None) -> Plan:
    """An agent's file to a customer on ``channel``: sent as what, or refused why.

    The size Slack reports is trusted; an unknown size is sent and left to the platform (a
    refusal then shows in the thread as any undelivered message does).
    """
    mime = (mime_type or "").lower()
    n = size or 0
    if channel == "telegram":
        if mime in TELEGRAM_PHOTO_TYPES and n <= TELEGRAM_PHOTO_MAX:
            return Plan(kind="photo")
        if n <= TELEGRAM_DOCUMENT_MAX:
            return Plan(kind="document")  # a photo over 10 MB still goes, as a document
        return Plan(refused=f"Telegram lets bots send files up to {TELEGRAM_DOCUMENT_MAX // MB} MB")
    if channel == "whatsapp":
        if mime in WHATSAPP_IMAGE_TYPES and n <= WHATSAPP_IMAGE_MAX:
            return Plan(kind="image")
        if n <= WHATSAPP_DOCUMENT_MAX:
            # Audio and video go as documents too: WhatsApp plays only a few codecs and caps
            # them at 16 MB, a document always opens.
            return Plan(kind="document")
        return Plan(refused=f"WhatsApp takes documents up to {WHATSAPP_DOCUMENT_MAX // MB} MB")
    if channel == "email":
        if n <= EMAIL_ATTACHMENT_MAX:
            return Plan(kind="document")
        return Plan(refused=f"email attachments go up to {EMAIL_ATTACHMENT_MAX // MB} MB")
    return Plan(refused=f"{channel} cannot receive files")
