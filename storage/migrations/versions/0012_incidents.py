"""Incidents: many customers writing about the same thing at once

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 07:10:00

- ``incidents``: one row per incident (a surge of alike tickets in one team), its card in Slack
  and its state (open, resolved, closed, merged into another).
- ``surge_signatures``: what detection knows of each new ticket (urgent keyword, intent, the
  encoder's vector of the first message), so that processes and restarts share it.
- ``surge_locks``: one row per team, locked while a new ticket of the team is matched, so two
  processes never open two incidents for the same surge.
- ``tickets.incident_id``, ``tickets.incident_only``: the incident a ticket is attached to, and
  whether it is shown only there (no card of its own); ``tickets.incident_listed``: the outbox
  row of the thread post that listed it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

When = storage.models.UTCDateTime(timezone=True)
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", Id, nullable=False),
        sa.Column("team", sa.String(length=60), nullable=False),
        sa.Column("slack_channel", sa.String(length=40), nullable=False),
        sa.Column("slack_ts", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("keyword", sa.String(length=200), nullable=True),
        sa.Column("intent", sa.String(length=100), nullable=True),
        sa.Column("centroid", sa.JSON(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("why", sa.Text(), nullable=False),
        sa.Column("opened_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.Column("closed_at", When, nullable=True),
        sa.Column("closed_by", sa.String(length=40), nullable=True),
        sa.Column("merged_into", Id, nullable=True),
        sa.Column("reply_at", When, nullable=True),
        sa.ForeignKeyConstraint(["merged_into"], ["incidents.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_incidents_team_status", "incidents", ["team", "status"])
    op.create_table(
        "surge_signatures",
        sa.Column("ticket_id", Id, nullable=False),
        sa.Column("team", sa.String(length=60), nullable=False),
        sa.Column("at", When, nullable=False),
        sa.Column("keyword", sa.String(length=200), nullable=True),
        sa.Column("intent", sa.String(length=100), nullable=True),
        sa.Column("vector", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("ticket_id"),
    )
    op.create_index("ix_surge_signatures_team_at", "surge_signatures", ["team", "at"])
    op.create_table(
        "surge_locks",
        sa.Column("team", sa.String(length=60), nullable=False),
        sa.Column("updated_at", When, nullable=False),
        sa.PrimaryKeyConstraint("team"),
    )
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("incident_id", Id, nullable=True))
        batch.add_column(
            sa.Column("incident_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("incident_listed", sa.BigInteger(), nullable=True))
        batch.create_foreign_key("fk_tickets_incident", "incidents", ["incident_id"], ["id"])
        batch.create_index("ix_tickets_incident_id", ["incident_id"])


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_index("ix_tickets_incident_id")
        batch.drop_constraint("fk_tickets_incident", type_="foreignkey")
        batch.drop_column("incident_listed")
        batch.drop_column("incident_only")
        batch.drop_column("incident_id")
    op.drop_table("surge_locks")
    op.drop_index("ix_surge_signatures_team_at", "surge_signatures")
    op.drop_table("surge_signatures")
    op.drop_index("ix_incidents_team_status", "incidents")
    op.drop_table("incidents")
