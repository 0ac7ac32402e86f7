"""Daily digests posted, and the members of Slack user groups named in ``roles:``

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 04:10:00

- ``digests``: one row per day a digest was queued, keyed by the day in ``DESK_TZ``; the row is
  inserted in the same transaction as the digest's outbox row, so the primary key makes it once
  a day across processes and restarts.
- ``role_groups``: the members of each user group (S…) in ``roles:``, as last read from Slack
  with ``usergroups.users.list``; every process reads roles from here, so a Slack outage keeps
  the last known members instead of locking supervisors out.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

When = storage.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "digests",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=40), nullable=False),
        sa.Column("queued_at", When, nullable=False),
        sa.Column("queued_by", sa.String(length=120), nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )
    op.create_table(
        "role_groups",
        sa.Column("group_id", sa.String(length=40), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("refreshed_at", When, nullable=False),
        sa.Column("error", sa.String(length=80), nullable=True),
        sa.PrimaryKeyConstraint("group_id"),
    )


def downgrade() -> None:
    op.drop_table("role_groups")
    op.drop_table("digests")
