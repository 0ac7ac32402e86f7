"""When each customer last wrote, for WhatsApp's 24-hour window

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 03:10:00

- ``identities.last_inbound_at``: the platform's timestamp of the customer's latest message.
  The desk sends free-form WhatsApp messages only within ``whatsapp.window_hours`` of it and a
  template after (bot/window). Unknown (NULL) for customers from before: their sends go, and
  Meta's 131047 tells the desk when the window was closed.
- Outbox rows may now be ``held`` (an agent's reply waiting for the customer to write) or
  ``skipped`` (a notice that could not go outside the window): ``status`` is a free string, so
  no schema change is needed for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.drop_column("last_inbound_at")
