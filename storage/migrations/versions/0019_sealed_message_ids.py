"""Encryption at rest: room for sealed platform message ids

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 09:45:00

A WhatsApp message id (``wamid.…``) is base64 that embeds the customer's phone number, so with
``DESK_DATA_KEY`` the columns holding platform message ids are sealed deterministically like the
addresses (storage/crypto.Address): the inbox's ``external_id`` (its dedupe key), and the
messages' and the outbox's ``platform_message_id``. A sealed value is longer than their old
VARCHAR(200): they become TEXT (on SQLite by a batch copy of the tables). Their indexes and
unique constraints stay as they were.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDENED = (
    ("inbox", "external_id"),
    ("messages", "platform_message_id"),
    ("outbox", "platform_message_id"),
)


def upgrade() -> None:
    for table, column in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.Text(), existing_type=sa.String(200))


def downgrade() -> None:
    for table, column in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.String(200), existing_type=sa.Text())
