"""conversations: drop the outbound counter and last message time that every send updated

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:00:00.000000

A conversation row exists once a message went either way, which is all the send rules need of it besides
``inbound_count``. The dispatcher leases conversation rows; while sends updated them too, every send on
PostgreSQL waited for the lease holder's transaction.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: on SQLite Alembic rebuilds the table (copy, drop, rename); PostgreSQL drops in place.
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("outbound_count")
        batch.drop_column("last_message_time")


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("outbound_count", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_message_time", sa.BigInteger(), nullable=True))
