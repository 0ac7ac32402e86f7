"""Self-service: status lookups by customers

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 04:00:00

- ``status_lookups``: each time a customer asked about their tickets, what they asked and what
  the desk answered (list, found, unknown, not_theirs, limited). Counted per customer over a
  window for the lookup rate limit, so the limit holds across restarts and processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = storage.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "status_lookups",
        sa.Column("id", Id, nullable=False),
        sa.Column("customer_id", Id, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("via", sa.String(length=20), nullable=False),
        sa.Column("asked", sa.BigInteger(), nullable=True),
        sa.Column("answer", sa.String(length=20), nullable=False),
        sa.Column("at", When, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_status_lookups_customer_at", "status_lookups", ["customer_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_status_lookups_customer_at", "status_lookups")
    op.drop_table("status_lookups")
