"""The knowledge base's index and the articles offered before a ticket

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 07:00:00

- ``kb_articles``: each article of ``kb/`` with its vector and the hash of its file; kept in the
  database (not a file beside the articles) so that several desk processes share one index,
  built once, and a start re-embeds only articles whose hash changed.
- ``kb_suggestions``: every article offered to a customer instead of a ticket, with the first
  message as read (so the ticket made on "Talk to a person" or a further message starts with
  it) and the outcome; ``solved`` rows are the deflections the reports count.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = storage.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "kb_articles",
        sa.Column("slug", sa.String(length=80), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("language", sa.String(length=20), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("encoder", sa.String(length=40), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("indexed_at", When, nullable=False),
        sa.PrimaryKeyConstraint("slug"),
    )
    op.create_table(
        "kb_suggestions",
        sa.Column("id", Id, nullable=False),
        sa.Column("customer_id", Id, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("chat_id", sa.String(length=200), nullable=False),
        sa.Column("article", sa.String(length=80), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("classification", sa.JSON(), nullable=False),
        sa.Column("language", sa.String(length=20), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("decided_at", When, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_kb_suggestions_chat", "kb_suggestions", ["channel", "chat_id", "outcome"])
    op.create_index("ix_kb_suggestions_ticket", "kb_suggestions", ["ticket_id"])
    op.create_index("ix_kb_suggestions_outcome_at", "kb_suggestions", ["outcome", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_kb_suggestions_outcome_at", "kb_suggestions")
    op.drop_index("ix_kb_suggestions_ticket", "kb_suggestions")
    op.drop_index("ix_kb_suggestions_chat", "kb_suggestions")
    op.drop_table("kb_suggestions")
    op.drop_table("kb_articles")
