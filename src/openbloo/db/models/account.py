"""Who sends: organizations, their API keys and sender numbers, and the idempotency records of their
requests."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, ForeignKey, Index, Integer, String, Table, Text

from openbloo.db.models.base import OptionalJSON, epoch_ms, metadata

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("country_code", String(2), nullable=True),
    epoch_ms("created_at", nullable=False),
    # How many chats the organization has (chats are never deleted): the ``total`` of ``GET /chats``
    # without counting the chats table on every list.
    Column("chat_count", BigInteger, nullable=False, server_default="0"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False, index=True),
    Column("name", String(255), nullable=True),
    # The plaintext key is shown once; only its SHA-256 and a short display prefix are stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("metadata", OptionalJSON, nullable=True),
    epoch_ms("created_at", nullable=False),
    epoch_ms("revoked_at"),
    epoch_ms("last_used_at"),
)

numbers = Table(
    "numbers",
    metadata,
    # The allocation id (``alloc_``) is the number's identity inside openbloo.
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False, index=True),
    Column("phone_number", String(32), nullable=False, unique=True),
    Column("transport", String(20), nullable=False),
    Column("transport_config", JSON, nullable=True),
    Column("plan_kind", String(20), nullable=True),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("daily_limit", Integer, nullable=True),
    Column("new_conversation_cap", Integer, nullable=True),
    # Maintained on accept/receive: least-recently-used rotation, /me usage and quotas read these.
    epoch_ms("last_used_at"),
    epoch_ms("last_active_at"),
    epoch_ms("last_message_sent"),
    Column("inbound_count", BigInteger, nullable=False, default=0),
    Column("outbound_count", BigInteger, nullable=False, default=0),
    Column("day", String(10), nullable=True),
    Column("day_outbound", Integer, nullable=False, default=0),
    Column("day_new_conversations", Integer, nullable=False, default=0),
    epoch_ms("created_at", nullable=False),
    # The device side (migration 0002). The secret path segment of this number's callback URLs: devices
    # that sign nothing (BlueBubbles) prove who they are by knowing it. Minted for every number at add time.
    Column("inbound_token", String(64), nullable=True),
    # Last known device health, written by the workers (coalesced): online | degraded | offline; NULL = never
    # checked. ``device_info`` holds what the device reported (e.g. {"private_api": bool, "helper_connected":
    # bool, "server_version": str}); the send planner reads it to refuse what the device cannot do.
    Column("device_status", String(10), nullable=True),
    epoch_ms("device_last_seen"),
    Column("device_info", JSON, nullable=True),
    # The reconciler's cursor: device messages created before this (epoch ms) have been applied.
    epoch_ms("sync_cursor"),
    Index("ix_numbers_inbound_token", "inbound_token", unique=True),
)

# Which keys may use a number; a number with no rows here is usable by every key of its organization.
number_api_keys = Table(
    "number_api_keys",
    metadata,
    Column("number_id", String(40), ForeignKey("numbers.id", ondelete="CASCADE"), primary_key=True),
    Column("api_key_id", String(40), ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
)


idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("organization_id", String(40), primary_key=True),
    Column("key", String(255), primary_key=True),
    # SHA-256 of the request (chat id + body): the same key with another request is a 409.
    Column("request_hash", String(64), nullable=False),
    Column("response_status", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    epoch_ms("created_at", nullable=False),
    epoch_ms("expires_at", nullable=False),
    Index("ix_idempotency_keys_expires", "expires_at"),
)
