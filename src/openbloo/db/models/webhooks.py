"""Events and their webhook deliveries: subscriptions, deliveries, attempts."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from openbloo.db.models.base import SeqType, epoch_ms, metadata

events = Table(
    "events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("organization_id", String(40), nullable=False),
    Column("type", String(40), nullable=False),
    Column("message_id", String(40), nullable=True),
    Column("api_key_id", String(40), nullable=True),
    Column("number_id", String(40), nullable=True),
    Column("payload", JSON, nullable=False),
    epoch_ms("created_at", nullable=False),
    # No index beyond the id's: an event is read only through its deliveries (by id). Indexes by message and
    # by organization, which no query used, took two entries of every event (migration 0009).
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("api_key_id", String(40), nullable=True),
    Column("url", Text, nullable=False),
    Column("webhook_type", String(20), nullable=False),
    Column("scope", String(20), nullable=False),
    Column("signing_secret", String(128), nullable=False),
    Column("valid_until", BigInteger, nullable=False, default=-1),
    epoch_ms("deprecated_at"),
    epoch_ms("last_triggered"),
    Column("failure_count", BigInteger, nullable=False, default=0),
    Column("rotation_count", Integer, nullable=False, default=0),
    epoch_ms("rotated_at"),
    epoch_ms("created_at", nullable=False),
    UniqueConstraint("organization_id", "url"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("webhook_id", String(40), ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("organization_id", String(40), nullable=False),
    # pending → succeeded | failed
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    epoch_ms("next_attempt_at", nullable=False),
    Column("lease_owner", String(64), nullable=True),
    epoch_ms("lease_until"),
    Column("is_replay", Boolean, nullable=False, default=False),
    Column("original_event_id", String(40), nullable=True),
    epoch_ms("created_at", nullable=False),
    Index("ix_webhook_deliveries_state_due", "state", "next_attempt_at"),
    Index("ix_webhook_deliveries_webhook", "webhook_id", "seq"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("delivery_id", String(40), nullable=False, index=True),
    Column("webhook_id", String(40), ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("webhook_url", Text, nullable=False),
    Column("event_body", Text, nullable=False),
    epoch_ms("attempted_at", nullable=False),
    epoch_ms("response_received_at"),
    Column("response_status", Integer, nullable=True),
    Column("response_body", Text, nullable=True),
    Column("duration_ms", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("is_replay", Boolean, nullable=False, default=False),
    Column("original_event_id", String(40), nullable=True),
    Index("ix_webhook_attempts_webhook_time", "webhook_id", "attempted_at"),
)
