"""delivery_jobs: index pending jobs only

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 04:00:00.000000

The claims look for pending jobs (the oldest due ones; a leased conversation's, in order), and the two
indexes they use held every job ever queued, with its state as a key column: a delivered job's entry
moved from "pending" to "done" at a random page of its conversation's. Partial indexes of the pending
jobs hold the queue alone; a finished job leaves them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_PENDING = sa.text("state = 'pending'")


def upgrade() -> None:
    op.drop_index("ix_delivery_jobs_state_due", table_name="delivery_jobs")
    op.drop_index("ix_delivery_jobs_conversation", table_name="delivery_jobs")
    op.create_index(
        "ix_delivery_jobs_pending_due",
        "delivery_jobs",
        ["next_attempt_at", "seq"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )
    op.create_index(
        "ix_delivery_jobs_pending_conversation",
        "delivery_jobs",
        ["conversation_id", "seq"],
        sqlite_where=_PENDING,
        postgresql_where=_PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_delivery_jobs_pending_conversation", table_name="delivery_jobs")
    op.drop_index("ix_delivery_jobs_pending_due", table_name="delivery_jobs")
    op.create_index("ix_delivery_jobs_conversation", "delivery_jobs", ["conversation_id", "state", "seq"])
    op.create_index("ix_delivery_jobs_state_due", "delivery_jobs", ["state", "next_attempt_at"])
