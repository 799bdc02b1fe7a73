"""chats: the newest message time and a count of messages stored out of the list's order

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 13:30:00.000000

A page deep in a long chat walked the chat's index up to its offset. The API process now remembers where
every thousandth message of a chat it paged into is (openbloo.chats.page_marks), and such marks hold while
nothing is stored before them in the list's order: a message older than the chat's newest. The chat row,
which every message updates, counts those. The upgrade reads each chat's newest time once (a probe of the
messages' (chat, time) index per chat); no message was counted before, and no mark exists yet.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("newest_message_time", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("time_order_breaks", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE chats SET newest_message_time = (SELECT max(time_sent) FROM messages WHERE messages.chat_id = chats.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("time_order_breaks")
        batch.drop_column("newest_message_time")
