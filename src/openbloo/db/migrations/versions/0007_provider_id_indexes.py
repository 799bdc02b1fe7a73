"""messages: index the provider ids devices gave, not the accepted messages' NULLs

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 04:00:00.000000

An accepted message has no provider id until its device names it, yet both provider-id indexes took an
entry for it at every send (and moved it when the id came). Partial indexes of the messages that have one
hold the same answers to every lookup by provider id, which implies it is not NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_HAS_PROVIDER_ID = sa.text("provider_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_messages_number_provider", table_name="messages")
    op.drop_index("ix_messages_provider_id", table_name="messages")
    op.create_index(
        "ix_messages_number_provider",
        "messages",
        ["number_id", "provider_id"],
        unique=True,
        sqlite_where=_HAS_PROVIDER_ID,
        postgresql_where=_HAS_PROVIDER_ID,
    )
    op.create_index(
        "ix_messages_provider_id",
        "messages",
        ["provider_id"],
        sqlite_where=_HAS_PROVIDER_ID,
        postgresql_where=_HAS_PROVIDER_ID,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_provider_id", table_name="messages")
    op.drop_index("ix_messages_number_provider", table_name="messages")
    op.create_index("ix_messages_provider_id", "messages", ["provider_id"])
    op.create_index("ix_messages_number_provider", "messages", ["number_id", "provider_id"], unique=True)
