"""delivery_jobs: no index of its own for transport_ref

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 04:20:00.000000

A job's transport reference is its message's id, which the unique index of message_id already holds; the
index of transport_ref took a second entry for it at every send. Lookups by reference go through
message_id.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_delivery_jobs_transport_ref", table_name="delivery_jobs")


def downgrade() -> None:
    op.create_index("ix_delivery_jobs_transport_ref", "delivery_jobs", ["transport_ref"])
