"""SLA timers and firings, the ticket's clock states, and the audit log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 01:05:00

- ``sla_timers``: one row per ticket with a running SLA clock: when the next thing is due. The
  scheduler claims due rows like the inbox and outbox (``FOR UPDATE SKIP LOCKED``, a lease).
- ``sla_firings``: every warning, breach and escalation that fired, under a unique key (ticket,
  target, what, level, the clock's start), so each fires exactly once across processes and
  restarts.
- ``tickets.sla``: the clocks as last computed (state and due time per target), for the card.
- ``audit_log``: privileged actions: who, what, when, on what.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = storage.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sla_timers",
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("due_at", When, nullable=False),
        sa.Column("lease_until", When, nullable=True),
        sa.Column("lease_owner", sa.String(length=120), nullable=True),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id"),
    )
    op.create_index("ix_sla_timers_due", "sla_timers", ["due_at"])
    op.create_table(
        "sla_firings",
        sa.Column("id", Id, nullable=False),
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("target", sa.String(length=20), nullable=False),
        sa.Column("what", sa.String(length=20), nullable=False),
        sa.Column("level", sa.Integer(), nullable=True),
        sa.Column("due_at", When, nullable=True),
        sa.Column("fired_at", When, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_sla_firings_ticket_id", "sla_firings", ["ticket_id"])
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("sla", sa.JSON(), nullable=True))
    op.create_table(
        "audit_log",
        sa.Column("id", Id, nullable=False),
        sa.Column("at", When, nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_at", "audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("sla")
    op.drop_index("ix_sla_firings_ticket_id", "sla_firings")
    op.drop_table("sla_firings")
    op.drop_index("ix_sla_timers_due", "sla_timers")
    op.drop_table("sla_timers")
