"""lease owners, who resolved, what a desk message was for

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 00:30:00

- ``inbox.lease_owner`` / ``outbox.lease_owner``: which process holds a claim, so a process that
  restarts can take back its own claims at once instead of waiting out their leases, and so a
  send whose outcome is unknown (the process died mid-call) can be recognised.
- ``tickets.resolved_by``: the person who resolved the ticket (not necessarily its assignee).
- ``messages.purpose``: what a desk-written message was for (``ack``, ``rating_prompt``, …), so
  that, e.g., a rating prompt's buttons can be taken away once it is answered.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=120), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=120), nullable=True))
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("resolved_by", sa.String(length=40), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("purpose", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("purpose")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("resolved_by")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("lease_owner")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("lease_owner")
