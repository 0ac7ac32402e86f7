"""teams and agents: availability, the round-robin pointer, who assigned a ticket

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:00:00

- ``agents``: one row per Slack user who is an agent: whether they said they are available,
  since when they are away (for the grace period), Slack presence when polled, and when they
  were last given a ticket (ties in balanced assignment). Rows are also what concurrent
  assigners lock, so that no agent is given more than their capacity by two processes at once.
- ``team_pointers``: per team, the last agent round robin gave a ticket to; in the database so
  that restarts and several processes keep one rotation.
- ``tickets.assigned_by``: "desk" when automatic assignment chose the assignee, else the user
  who claimed; a person's claim may take over an automatic assignment, not another person's.
- ``tickets.waiting_reason``: why an unassigned ticket is waiting, shown on its card.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("away_since", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("presence", sa.String(length=10), nullable=True),
        sa.Column("last_assigned_at", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "team_pointers",
        sa.Column("team", sa.String(length=60), nullable=False),
        sa.Column("last_agent", sa.String(length=40), nullable=True),
        sa.Column("updated_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("team"),
    )
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("assigned_by", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("waiting_reason", sa.String(length=200), nullable=True))
        batch.create_index("ix_tickets_team_status", ["team", "status"])
        batch.create_index("ix_tickets_assignee_status", ["assignee_id", "status"])


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_index("ix_tickets_assignee_status")
        batch.drop_index("ix_tickets_team_status")
        batch.drop_column("waiting_reason")
        batch.drop_column("assigned_by")
    op.drop_table("team_pointers")
    op.drop_table("agents")
