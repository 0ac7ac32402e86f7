"""Find an outbox row by the id the platform gave its message, and an identity by its chat

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 00:30:00

- ``ix_outbox_platform_message``: an agent's message in the thread of a card the desk replaced
  (transferred, re-posted) finds the card's ticket by the card's ts, and a WhatsApp delivery
  status finds the send it reports on, without reading the whole outbox.
- ``ix_identities_chat``: the outbox finds the customers who blocked the bot among the chats a
  batch writes to, and a card finds its customer's identity, by channel and chat.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outbox_platform_message", "outbox", ["platform_message_id"])
    op.create_index("ix_identities_chat", "identities", ["channel", "chat_id"])


def downgrade() -> None:
    op.drop_index("ix_identities_chat", table_name="identities")
    op.drop_index("ix_outbox_platform_message", table_name="outbox")
