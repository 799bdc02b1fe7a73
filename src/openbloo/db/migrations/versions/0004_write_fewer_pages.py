"""messages and contacts: drop what every send wrote and nothing read

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:00:00.000000

Each index entry and row a send updates is a page the commit writes (SQLite: into the WAL, and later once
more into the database file), and most of them are random pages, one per chat. Three of them served no query:

- ``ix_messages_conversation`` (no query reads messages by conversation; delivery order is the jobs' index);
- ``ix_messages_status`` over every message, where restart recovery only looks for messages left ``sent``:
  it becomes ``ix_messages_sent``, a partial index of just those;
- ``contacts.last_message_time``, updated by every message in or out and read by nothing (a contact's last
  message time is its chat's).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SENT = sa.text("status = 'sent'")


def upgrade() -> None:
    op.drop_index("ix_messages_conversation", table_name="messages")
    op.drop_index("ix_messages_status", table_name="messages")
    op.create_index("ix_messages_sent", "messages", ["status"], sqlite_where=_SENT, postgresql_where=_SENT)
    # Batch mode: on SQLite Alembic rebuilds the table (copy, drop, rename); PostgreSQL drops in place.
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("last_message_time")


def downgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("last_message_time", sa.BigInteger(), nullable=True))
    op.drop_index("ix_messages_sent", table_name="messages")
    op.create_index("ix_messages_status", "messages", ["status"])
    op.create_index("ix_messages_conversation", "messages", ["conversation_id", "seq"])
