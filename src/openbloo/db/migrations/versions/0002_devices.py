"""devices: callback tokens, device health and sync cursor on numbers; device chat ids; opt-outs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN and CREATE INDEX only: SQLite does both in place, so no table is rebuilt.
    op.add_column("numbers", sa.Column("inbound_token", sa.String(length=64), nullable=True))
    op.add_column("numbers", sa.Column("device_status", sa.String(length=10), nullable=True))
    op.add_column("numbers", sa.Column("device_last_seen", sa.BigInteger(), nullable=True))
    op.add_column("numbers", sa.Column("device_info", sa.JSON(), nullable=True))
    op.add_column("numbers", sa.Column("sync_cursor", sa.BigInteger(), nullable=True))
    # Numbers added before this revision get their callback token now, like every number added later.
    numbers = sa.table("numbers", sa.column("id", sa.String), sa.column("inbound_token", sa.String))
    conn = op.get_bind()
    for (number_id,) in conn.execute(sa.select(numbers.c.id)).all():
        conn.execute(numbers.update().where(numbers.c.id == number_id).values(inbound_token=secrets.token_urlsafe(24)))
    op.create_index("ix_numbers_inbound_token", "numbers", ["inbound_token"], unique=True)

    op.add_column("conversations", sa.Column("device_chat_guid", sa.String(length=255), nullable=True))
    op.create_index("ix_messages_number_provider", "messages", ["number_id", "provider_id"], unique=True)
    op.create_index("ix_delivery_jobs_transport_ref", "delivery_jobs", ["transport_ref"], unique=False)

    op.create_table(
        "opt_outs",
        sa.Column("number_id", sa.String(length=40), nullable=False),
        sa.Column("handle", sa.String(length=320), nullable=False),
        sa.Column("opted_out_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["number_id"], ["numbers.id"], name=op.f("fk_opt_outs_number_id_numbers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("number_id", "handle", name=op.f("pk_opt_outs")),
    )


def downgrade() -> None:
    op.drop_table("opt_outs")
    op.drop_index("ix_delivery_jobs_transport_ref", table_name="delivery_jobs")
    op.drop_index("ix_messages_number_provider", table_name="messages")
    op.drop_index("ix_numbers_inbound_token", table_name="numbers")
    # DROP COLUMN: native on PostgreSQL and on SQLite ≥ 3.35; batch mode covers older SQLite by rebuilding.
    with op.batch_alter_table("conversations") as batch_op:
        batch_op.drop_column("device_chat_guid")
    with op.batch_alter_table("numbers") as batch_op:
        for column in ("sync_cursor", "device_info", "device_last_seen", "device_status", "inbound_token"):
            batch_op.drop_column(column)
