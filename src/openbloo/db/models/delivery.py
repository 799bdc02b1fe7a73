"""The delivery queue: one job per outgoing message, claimed by the dispatcher."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, Text, literal_column

from openbloo.db.models.base import SeqType, epoch_ms, metadata, partial

_JOB_PENDING_SQL = "state = 'pending'"  # the partial indexes' predicate (JOB_IS_PENDING, below)

delivery_jobs = Table(
    "delivery_jobs",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("message_id", String(40), ForeignKey("messages.id"), nullable=False, unique=True),
    Column("organization_id", String(40), nullable=False),
    Column("conversation_id", String(40), ForeignKey("conversations.id"), nullable=False),
    Column("number_id", String(40), ForeignKey("numbers.id"), nullable=False),
    # pending → (claimed) → done | failed | cancelled
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    epoch_ms("next_attempt_at", nullable=False),
    Column("lease_owner", String(64), nullable=True),
    epoch_ms("lease_until"),
    # Stable reference handed to the transport on every attempt (e.g. BlueBubbles tempGuid), so a
    # re-sent job can be recognised after a crash. It is the message's id (messages.outbox), so the unique
    # index of message_id finds a job by it: an index of its own cost every send an entry (migration 0008).
    Column("transport_ref", String(64), nullable=False),
    Column("last_error", Text, nullable=True),
    epoch_ms("created_at", nullable=False),
    epoch_ms("updated_at", nullable=False),
    # The claims read pending jobs only, and these partial indexes hold just those: a delivered job leaves
    # them instead of moving to a "done" entry at a random page of its conversation, and while the workers
    # keep up they are small and stay in cache. Queries name the literal (JOB_IS_PENDING) to use them.
    Index(
        "ix_delivery_jobs_pending_due",
        "next_attempt_at",
        "seq",
        **partial(_JOB_PENDING_SQL),
    ),
    Index(
        "ix_delivery_jobs_pending_conversation",
        "conversation_id",
        "seq",
        **partial(_JOB_PENDING_SQL),
    ),
)

# "This job is pending", as the partial indexes of delivery_jobs are defined: PostgreSQL's generic plans use
# a partial index only for a query whose WHERE names the same literal.
JOB_IS_PENDING = delivery_jobs.c.state == literal_column("'pending'")
