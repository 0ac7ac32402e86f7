"""The outbox's rank: a new ticket's card goes out in the order of its priority

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 04:05:00

- ``outbox.rank``: 0 urgent, 1 high, 2 normal (everything that is not a card), 3 low. When rows
  wait on a platform's rate limit, the claim takes the lowest rank first, so in a burst the
  urgent tickets' cards reach Slack before the others; order within a destination (one ticket's
  card and thread, one customer's chat) is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("rank", sa.SmallInteger(), nullable=False, server_default="2"))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("rank")
