"""events: no indexes by message or by organization

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 05:15:00.000000

An event is read only through its webhook deliveries, by its id, which has its own unique index. The
indexes by message and by (organization, seq) served no query and took two entries of every event, four
to five events a message.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_events_org_seq", table_name="events")
    op.drop_index("ix_events_message_id", table_name="events")


def downgrade() -> None:
    op.create_index("ix_events_message_id", "events", ["message_id"])
    op.create_index("ix_events_org_seq", "events", ["organization_id", "seq"])
