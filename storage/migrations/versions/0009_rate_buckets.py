"""The platforms' rate limits, shared by the processes of a fleet

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 07:00:00

- ``rate_buckets``: one token bucket per limit (a Slack channel, a Telegram chat, Telegram's
  and WhatsApp's overall limits), read and updated under a row lock by every desk process on
  PostgreSQL, so together they stay within what the platforms allow (bot/ratelimit.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

When = storage.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("stamp", When, nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
