"""Find a chat's latest ticket, and the timers' lease owners, without reading every row

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-08 04:50:00

- ``ix_tickets_chat``: every customer message looks up its chat's latest ticket (open, or to
  reopen) by channel and chat, newest first. Without an index this read every ticket, newest
  first, and for a customer's first message all of them: a cost that grew with the desk
  (docs/performance.md, "Issue 27, tenth slice").
- ``ix_sla_timers_lease_owner``, ``ix_automation_timers_lease_owner``: every running desk asks
  every second which processes hold timers (to take over a dead one's at once); that read every
  timer.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tickets_chat", "tickets", ["channel", "chat_id"])
    op.create_index("ix_sla_timers_lease_owner", "sla_timers", ["lease_owner"])
    op.create_index("ix_automation_timers_lease_owner", "automation_timers", ["lease_owner"])


def downgrade() -> None:
    op.drop_index("ix_automation_timers_lease_owner", table_name="automation_timers")
    op.drop_index("ix_sla_timers_lease_owner", table_name="sla_timers")
    op.drop_index("ix_tickets_chat", table_name="tickets")
