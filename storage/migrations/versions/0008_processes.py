"""The desks that are running, and when each last said so

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 04:10:00

- ``processes``: one row per running desk process, keyed by its lease owner id
  (``host:pid:boot id``, see bot/leases.py), with the time of its last heartbeat. A process
  whose heartbeat is a few seconds old is dead: the others take its inbox, outbox and SLA timer
  leases over at once instead of waiting the 60-second lease out.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

When = storage.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "processes",
        sa.Column("owner", sa.String(length=120), nullable=False),
        sa.Column("host", sa.String(length=80), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", When, nullable=False),
        sa.Column("heartbeat_at", When, nullable=False),
        sa.PrimaryKeyConstraint("owner"),
    )
    op.create_index("ix_processes_heartbeat", "processes", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_index("ix_processes_heartbeat", "processes")
    op.drop_table("processes")
