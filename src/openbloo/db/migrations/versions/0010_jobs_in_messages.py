"""messages carry their delivery job: delivery_jobs folded into the message's row

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 11:00:00.000000

Every accepted message had a delivery job in a table of its own: a second row, its message-id index and a
statement a send, and every outcome updated two rows where one is the message's. The job's state moves
into the message (``job_*`` columns, NULL for a message nobody sends), with the same partial indexes of
pending jobs; the job's ``seq`` is the message's (both were the acceptance order) and its transport
reference was the message's id. Existing jobs are copied over before their table goes.

The two partial indexes of pending jobs, by due time and by conversation, become one by seq: the claims
walk pending jobs in acceptance order (openbloo.delivery.claims), and the index by conversation took an
entry at a random page of every send.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_PENDING = sa.text("job_state = 'pending'")
_OLD_PENDING = sa.text("state = 'pending'")
_COPIED = ("state", "attempts", "next_attempt_at", "lease_owner", "updated_at", "last_error")


def upgrade() -> None:
    op.add_column("messages", sa.Column("job_state", sa.String(length=20), nullable=True))
    op.add_column("messages", sa.Column("job_attempts", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("job_next_attempt_at", sa.BigInteger(), nullable=True))
    op.add_column("messages", sa.Column("job_lease_owner", sa.String(length=64), nullable=True))
    op.add_column("messages", sa.Column("job_updated_at", sa.BigInteger(), nullable=True))
    op.add_column("messages", sa.Column("job_last_error", sa.Text(), nullable=True))
    # UPDATE ... FROM: PostgreSQL, and SQLite since 3.33.
    sets = ", ".join(f"job_{c} = j.{c}" for c in _COPIED)
    op.execute(f"UPDATE messages SET {sets} FROM delivery_jobs AS j WHERE j.message_id = messages.id")
    op.create_index("ix_messages_job_pending", "messages", ["seq"], sqlite_where=_PENDING, postgresql_where=_PENDING)
    op.drop_table("delivery_jobs")  # its indexes go with it


def downgrade() -> None:
    op.create_table(
        "delivery_jobs",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("number_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), nullable=True),
        sa.Column("transport_ref", sa.String(length=64), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"], name=op.f("fk_delivery_jobs_conversation_id_conversations")
        ),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], name=op.f("fk_delivery_jobs_message_id_messages")),
        sa.ForeignKeyConstraint(["number_id"], ["numbers.id"], name=op.f("fk_delivery_jobs_number_id_numbers")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_delivery_jobs")),
        sa.UniqueConstraint("message_id", name=op.f("uq_delivery_jobs_message_id")),
    )
    op.execute(
        "INSERT INTO delivery_jobs (message_id, organization_id, conversation_id, number_id, state, attempts,"
        " next_attempt_at, lease_owner, transport_ref, last_error, created_at, updated_at)"
        " SELECT id, organization_id, conversation_id, number_id, job_state, job_attempts, job_next_attempt_at,"
        " job_lease_owner, id, job_last_error, created_at, job_updated_at"
        " FROM messages WHERE job_state IS NOT NULL ORDER BY seq"
    )
    op.create_index(
        "ix_delivery_jobs_pending_due",
        "delivery_jobs",
        ["next_attempt_at", "seq"],
        sqlite_where=_OLD_PENDING,
        postgresql_where=_OLD_PENDING,
    )
    op.create_index(
        "ix_delivery_jobs_pending_conversation",
        "delivery_jobs",
        ["conversation_id", "seq"],
        sqlite_where=_OLD_PENDING,
        postgresql_where=_OLD_PENDING,
    )
    op.drop_index("ix_messages_job_pending", table_name="messages")
    # DROP COLUMN: native on PostgreSQL and on SQLite ≥ 3.35; batch mode covers older SQLite by rebuilding.
    with op.batch_alter_table("messages") as batch_op:
        for column in _COPIED:
            batch_op.drop_column(f"job_{column}")
