"""Who has the app's Home tab open; agents' note about a customer

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 06:55:00

- ``home_views``: one row per Slack user who opened the desk's App Home. Their Home is
  published again (debounced) on every change that concerns them; people who never looked at it
  cost no views.publish calls.
- ``customers.note``: the free text agents keep about a customer (the card's History modal);
  exported with the customer's data and erased when they are forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

When = storage.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "home_views",
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("opened_at", When, nullable=False),
        sa.Column("published_at", When, nullable=True),
        sa.PrimaryKeyConstraint("user_id"),
    )
    op.add_column("customers", sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("note")
    op.drop_table("home_views")
