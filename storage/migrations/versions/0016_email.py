"""Email as a channel: how far each mailbox was read, its threads and their Message-IDs

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 06:20:00

- ``email_mailboxes``: the highest UID taken into the inbox, per mailbox and UIDVALIDITY, so a
  restart, a dropped connection or a second desk neither skips nor re-reads mail.
- ``email_threads``: one email conversation (the chat id its tickets carry), the address replies
  go to and the subject they continue.
- ``email_message_ids``: every Message-ID received or sent, and its thread, for In-Reply-To and
  References.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

When = storage.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "email_mailboxes",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", When, nullable=False),
    )
    op.create_table(
        "email_threads",
        sa.Column("chat_id", sa.String(100), primary_key=True),
        sa.Column("address", sa.String(100), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("created_at", When, nullable=False),
    )
    op.create_table(
        "email_message_ids",
        sa.Column("message_id", sa.String(200), primary_key=True),
        sa.Column("chat_id", sa.String(100), nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("created_at", When, nullable=False),
    )
    op.create_index("ix_email_message_ids_chat", "email_message_ids", ["chat_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_email_message_ids_chat", table_name="email_message_ids")
    op.drop_table("email_message_ids")
    op.drop_table("email_threads")
    op.drop_table("email_mailboxes")
