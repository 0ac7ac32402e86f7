"""Automations run by the desk: anchors, timers, firings and suspensions

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 06:00:00

- ``automation_anchors``: per ticket, when each running anchor of the time rules started.
- ``automation_timers``: one row per (rule, ticket, anchor start) due; the scheduler claims due
  rows with ``FOR UPDATE SKIP LOCKED`` and a lease, like ``sla_timers``.
- ``automation_firings``: each firing, under the unique key (rule, ticket, anchor start or event
  id), written in the same transaction as its actions: at most once.
- ``automation_suspensions``: rules that passed ``per_ticket_per_day`` on a ticket.

Tags need no column: they are the latest ``tags`` ticket event (as set on the card).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = storage.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "automation_anchors",
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("started", sa.JSON(), nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id"),
    )
    op.create_table(
        "automation_timers",
        sa.Column("id", Id, nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("anchor", sa.String(length=30), nullable=False),
        sa.Column("anchor_start", When, nullable=False),
        sa.Column("due_at", When, nullable=False),
        sa.Column("lease_until", When, nullable=True),
        sa.Column("lease_owner", sa.String(length=120), nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rule", "ticket_id", "anchor_start", name="uq_automation_timers_key"),
    )
    op.create_index("ix_automation_timers_due", "automation_timers", ["due_at"])
    op.create_index("ix_automation_timers_ticket_id", "automation_timers", ["ticket_id"])
    op.create_table(
        "automation_firings",
        sa.Column("id", Id, nullable=False),
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("fired_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rule", "ticket_id", "key", name="uq_automation_firings_key"),
    )
    op.create_index("ix_automation_firings_fired_at", "automation_firings", ["fired_at"])
    op.create_index("ix_automation_firings_ticket_id", "automation_firings", ["ticket_id"])
    op.create_table(
        "automation_suspensions",
        sa.Column("rule", sa.String(length=100), nullable=False),
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("at", When, nullable=False),
        sa.Column("why", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("rule", "ticket_id"),
    )


def downgrade() -> None:
    op.drop_table("automation_suspensions")
    op.drop_index("ix_automation_firings_ticket_id", "automation_firings")
    op.drop_index("ix_automation_firings_fired_at", "automation_firings")
    op.drop_table("automation_firings")
    op.drop_index("ix_automation_timers_ticket_id", "automation_timers")
    op.drop_index("ix_automation_timers_due", "automation_timers")
    op.drop_table("automation_timers")
    op.drop_table("automation_anchors")
