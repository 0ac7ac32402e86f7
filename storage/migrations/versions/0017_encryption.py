"""Encryption at rest: room for sealed values

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 06:45:00

Customer names, usernames and phone numbers, and the e-mail channel's reply addresses, may now
hold a value sealed under ``DESK_DATA_KEY`` (``dk1:<key id>:<base64>``, storage/crypto.py),
longer than their old VARCHAR limits: they become TEXT (on SQLite, which enforces no length, by
a batch copy of the tables). The other sealed columns were TEXT or JSON already (a sealed JSON
document is a JSON string).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDENED = (
    ("customers", "name", 200),
    ("identities", "username", 100),
    ("identities", "phone", 40),
    ("email_threads", "address", 100),
)


def upgrade() -> None:
    for table, column, length in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.Text(), existing_type=sa.String(length))


def downgrade() -> None:
    for table, column, length in WIDENED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, type_=sa.String(length), existing_type=sa.Text())
