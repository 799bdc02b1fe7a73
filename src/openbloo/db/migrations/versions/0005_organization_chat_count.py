"""organizations: a chat counter for the total of GET /chats

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 03:30:00.000000

``GET /chats`` answers ``pagination.total``, which it counted over the organization's chats on every call:
the longer the history, the slower the list (on PostgreSQL at 10,000 chats, the count was most of the
request). The organization now keeps the number, as chats keep their message counts; the upgrade counts
the chats there are once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("chat_count", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE organizations SET chat_count ="
        " (SELECT count(*) FROM chats WHERE chats.organization_id = organizations.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("chat_count")
