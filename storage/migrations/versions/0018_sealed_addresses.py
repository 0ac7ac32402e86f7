"""Encryption at rest: room for sealed addresses

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 08:55:00

The platform addresses the desk finds and orders customers by (identities' ``external_id`` and
``chat_id``, tickets' and knowledge-base suggestions' ``chat_id``, the inbox's
``conversation``, the outbox's ``destination_key``, the e-mail threads' and Message-IDs'
``chat_id``) may now hold an address sealed deterministically under ``DESK_DATA_KEY``
(``da1:<key id>:<base64>``, storage/crypto.Address), longer than their old VARCHAR limits: they
become TEXT (on SQLite, which enforces no length, by a batch copy of the tables). Their
indexes and unique constraints stay as they were.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDENED = (
    ("identities", ("external_id", 100), ("chat_id", 100)),
    ("tickets", ("chat_id", 100)),
    ("kb_suggestions", ("chat_id", 200)),
    ("inbox", ("conversation", 200)),
    ("outbox", ("destination_key", 200)),
    ("email_threads", ("chat_id", 100)),
    ("email_message_ids", ("chat_id", 100)),
)


def upgrade() -> None:
    for table, *columns in WIDENED:
        with op.batch_alter_table(table) as batch:
            for column, length in columns:
                batch.alter_column(column, type_=sa.Text(), existing_type=sa.String(length))


def downgrade() -> None:
    for table, *columns in WIDENED:
        with op.batch_alter_table(table) as batch:
            for column, length in columns:
                batch.alter_column(column, type_=sa.String(length), existing_type=sa.Text())
