"""The schema: SQLAlchemy Core tables, the single source the Alembic migrations are generated from.

Conventions: public ids are prefixed random strings (``msg_``, ``grp_`` ...); times are UTC epoch ms
(BIGINT); counters the API lists (message counts, usage) are maintained on write, so reads never count
rows. Tables that need acceptance order (messages, jobs, events, deliveries) have an integer ``seq``
primary key assigned at insert.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)

# Integer primary keys must be INTEGER on SQLite to alias the rowid (and so autoincrement cheaply).
SeqType = BigInteger().with_variant(Integer(), "sqlite")
# Optional JSON: Python None is stored as SQL NULL, not as the JSON text 'null' (which costs an encode on
# every write and a decode on every read of the message columns that are usually empty). Rows written
# before read back the same: both forms are None.
OptionalJSON = JSON(none_as_null=True)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _ms(name: str, nullable: bool = True) -> Column:
    return Column(name, BigInteger, nullable=nullable)


organizations = Table(
    "organizations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("country_code", String(2), nullable=True),
    _ms("created_at", nullable=False),
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
    _ms("created_at", nullable=False),
    _ms("revoked_at"),
    _ms("last_used_at"),
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
    _ms("last_used_at"),
    _ms("last_active_at"),
    _ms("last_message_sent"),
    Column("inbound_count", BigInteger, nullable=False, default=0),
    Column("outbound_count", BigInteger, nullable=False, default=0),
    Column("day", String(10), nullable=True),
    Column("day_outbound", Integer, nullable=False, default=0),
    Column("day_new_conversations", Integer, nullable=False, default=0),
    _ms("created_at", nullable=False),
    # The device side (migration 0002). The secret path segment of this number's callback URLs: devices
    # that sign nothing (BlueBubbles) prove who they are by knowing it. Minted for every number at add time.
    Column("inbound_token", String(64), nullable=True),
    # Last known device health, written by the workers (coalesced): online | degraded | offline; NULL = never
    # checked. ``device_info`` holds what the device reported (e.g. {"private_api": bool, "helper_connected":
    # bool, "server_version": str}); the send planner reads it to refuse what the device cannot do.
    Column("device_status", String(10), nullable=True),
    _ms("device_last_seen"),
    Column("device_info", JSON, nullable=True),
    # The reconciler's cursor: device messages created before this (epoch ms) have been applied.
    _ms("sync_cursor"),
    Index("ix_numbers_inbound_token", "inbound_token", unique=True),
)

# Which keys may use a number; a number with no rows here is usable by every key of its organization.
number_api_keys = Table(
    "number_api_keys",
    metadata,
    Column("number_id", String(40), ForeignKey("numbers.id", ondelete="CASCADE"), primary_key=True),
    Column("api_key_id", String(40), ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("identifier", String(320), nullable=False),
    Column("type", String(10), nullable=False),
    Column("name", String(255), nullable=True),
    _ms("created_at", nullable=False),
    # A contact's last message time is its chat's (chats.last_message_time): not kept here too, where every
    # send would update one more row.
    _ms("deleted_at"),
    UniqueConstraint("organization_id", "identifier"),
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("contact_id", String(40), ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(255), primary_key=True),
    _ms("created_at", nullable=False),
    _ms("deleted_at"),
)

groups = Table(
    "groups",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False, index=True),
    Column("number_id", String(40), ForeignKey("numbers.id"), nullable=True),
    Column("name", String(255), nullable=True),
    Column("chat_guid", String(255), nullable=True),
    Column("icon_url", Text, nullable=True),
    # Sorted, comma-joined member handles: the participant set unnamed groups are matched on.
    Column("participants_key", Text, nullable=True),
    # "<number_id>|<participants_key>" for unnamed (auto) groups only; unique, so racing multi-recipient
    # sends to a new set create one group. NULL for named groups (NULLs never collide).
    Column("auto_key", Text, nullable=True),
    _ms("created_at", nullable=False),
    _ms("deleted_at"),
    UniqueConstraint("organization_id", "auto_key"),
    UniqueConstraint("organization_id", "chat_guid"),
    Index("ix_groups_org_participants", "organization_id", "participants_key"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", String(40), ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("identifier", String(320), primary_key=True),
    Column("contact_id", String(40), ForeignKey("contacts.id"), nullable=True),
    _ms("added_at", nullable=False),
    _ms("removed_at"),
)

chats = Table(
    "chats",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    # The API's chat id: the counterpart's E.164 / e-mail, or the group id.
    Column("chat_key", String(400), nullable=False),
    Column("type", String(10), nullable=False),
    Column("contact_id", String(40), ForeignKey("contacts.id"), nullable=True),
    Column("group_id", String(40), ForeignKey("groups.id"), nullable=True),
    # Sticky sender: the number this chat last used, in either direction.
    Column("last_number_id", String(40), ForeignKey("numbers.id"), nullable=True),
    Column("message_count", BigInteger, nullable=False, default=0),
    Column("inbound_count", BigInteger, nullable=False, default=0),
    Column("outbound_count", BigInteger, nullable=False, default=0),
    _ms("first_message_time"),
    _ms("last_message_time"),
    _ms("last_inbound_time"),
    _ms("last_outbound_time"),
    Column("last_message_id", String(40), nullable=True),
    Column("last_message_text", Text, nullable=True),
    Column("last_message_direction", String(10), nullable=True),
    _ms("created_at", nullable=False),
    UniqueConstraint("organization_id", "chat_key"),
    Index("ix_chats_org_recent", "organization_id", "last_message_time", "created_at"),
)

# One chat on one sender number: the unit of delivery order and of the per-number rules. A row exists once a
# message was sent or received on it (so "no row" is the new-conversation and first-message test), and
# ``inbound_count`` feeds the inbound-only plan. Sends do not update this row: the dispatcher leases it, and
# on PostgreSQL every send's counter update waited for the lease holder's transaction.
conversations = Table(
    "conversations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("chat_id", String(40), ForeignKey("chats.id"), nullable=False),
    Column("number_id", String(40), ForeignKey("numbers.id"), nullable=False),
    Column("inbound_count", BigInteger, nullable=False, default=0),
    # Delivery lease (dispatcher): one worker owns a conversation at a time, which keeps its order.
    Column("lease_owner", String(64), nullable=True),
    _ms("lease_until"),
    _ms("created_at", nullable=False),
    # The device's own id for this 1:1 chat (BlueBubbles ``iMessage;-;+1555…`` or ``any;-;+1555…``), learnt
    # from the device; sends go to the chat the device really uses. Groups keep theirs in ``groups.chat_guid``.
    Column("device_chat_guid", String(255), nullable=True),
    UniqueConstraint("chat_id", "number_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("chat_id", String(40), ForeignKey("chats.id"), nullable=False),
    Column("conversation_id", String(40), ForeignKey("conversations.id"), nullable=True),
    Column("number_id", String(40), ForeignKey("numbers.id"), nullable=True),
    Column("api_key_id", String(40), nullable=True),
    Column("group_id", String(40), nullable=True),
    Column("direction", String(10), nullable=False),
    Column("status", String(30), nullable=False),
    Column("protocol", String(20), nullable=False),
    Column("text", Text, nullable=True),
    Column("attachments", OptionalJSON, nullable=True),
    Column("parts", OptionalJSON, nullable=True),
    Column("effect", String(30), nullable=True),
    Column("reply_to", OptionalJSON, nullable=True),
    Column("link_preview", OptionalJSON, nullable=True),
    Column("metadata", OptionalJSON, nullable=True),
    # Send options the transport needs (share_contact, use_typing_indicator, mention, balloon mode ...).
    Column("options", OptionalJSON, nullable=True),
    Column("sender", String(320), nullable=True),
    Column("error", Text, nullable=True),
    # The device's / provider's id for the message (iMessage GUID, Twilio SID): replies and callbacks match on it.
    Column("provider_id", String(255), nullable=True, index=True),
    _ms("time_sent", nullable=False),
    _ms("time_delivered"),
    _ms("time_read"),
    _ms("created_at", nullable=False),
    Index("ix_messages_chat_time", "chat_id", "time_sent", "seq"),
    # Restart recovery looks for messages left "sent" (receipts to re-arm), and only for those: a partial
    # index holds just them, so the status changes of every other message write no index entry.
    Index(
        "ix_messages_sent",
        "status",
        sqlite_where=text("status = 'sent'"),
        postgresql_where=text("status = 'sent'"),
    ),
    # One device message is one openbloo message: devices repeat their news (BlueBubbles sends
    # ``new-message`` twice, the reconciler re-reads what webhooks brought), and racing writers of the same
    # device id fail at flush and are re-run, which then finds the stored row.
    Index("ix_messages_number_provider", "number_id", "provider_id", unique=True),
)
# "This message is sent", as the partial index ix_messages_sent is defined: SQLite (and PostgreSQL's generic
# plans) use a partial index only for a query whose WHERE names the same literal, not a bound parameter.
MESSAGE_IS_SENT = messages.c.status == literal_column("'sent'")

# Recipients who asked a number to stop messaging them (SMS STOP; written by the transports that learn it).
# A send to an opted-out handle on that number is refused with 403 ``recipient_opted_out``.
opt_outs = Table(
    "opt_outs",
    metadata,
    Column("number_id", String(40), ForeignKey("numbers.id", ondelete="CASCADE"), primary_key=True),
    Column("handle", String(320), primary_key=True),
    _ms("opted_out_at", nullable=False),
)

reactions = Table(
    "reactions",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("message_id", String(40), ForeignKey("messages.id"), nullable=False, index=True),
    Column("reaction", String(64), nullable=False),
    Column("is_added", Boolean, nullable=False),
    Column("sender", String(320), nullable=True),
    _ms("time_sent", nullable=False),
)

_JOB_PENDING_SQL = text("state = 'pending'")  # the partial indexes' predicate (JOB_IS_PENDING, below)

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
    _ms("next_attempt_at", nullable=False),
    Column("lease_owner", String(64), nullable=True),
    _ms("lease_until"),
    # Stable reference handed to the transport on every attempt (e.g. BlueBubbles tempGuid), so a
    # re-sent job can be recognised after a crash.
    Column("transport_ref", String(64), nullable=False),
    Column("last_error", Text, nullable=True),
    _ms("created_at", nullable=False),
    _ms("updated_at", nullable=False),
    # The claims read pending jobs only, and these partial indexes hold just those: a delivered job leaves
    # them instead of moving to a "done" entry at a random page of its conversation, and while the workers
    # keep up they are small and stay in cache. Queries name the literal (JOB_IS_PENDING) to use them.
    Index(
        "ix_delivery_jobs_pending_due",
        "next_attempt_at",
        "seq",
        sqlite_where=_JOB_PENDING_SQL,
        postgresql_where=_JOB_PENDING_SQL,
    ),
    Index(
        "ix_delivery_jobs_pending_conversation",
        "conversation_id",
        "seq",
        sqlite_where=_JOB_PENDING_SQL,
        postgresql_where=_JOB_PENDING_SQL,
    ),
    # Device news names our message by the reference we gave it (BlueBubbles echoes it as ``tempGuid``).
    Index("ix_delivery_jobs_transport_ref", "transport_ref"),
)

# "This job is pending", as the partial indexes of delivery_jobs are defined: PostgreSQL's generic plans use
# a partial index only for a query whose WHERE names the same literal.
JOB_IS_PENDING = delivery_jobs.c.state == literal_column("'pending'")

events = Table(
    "events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("organization_id", String(40), nullable=False),
    Column("type", String(40), nullable=False),
    Column("message_id", String(40), nullable=True, index=True),
    Column("api_key_id", String(40), nullable=True),
    Column("number_id", String(40), nullable=True),
    Column("payload", JSON, nullable=False),
    _ms("created_at", nullable=False),
    Index("ix_events_org_seq", "organization_id", "seq"),
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
    _ms("deprecated_at"),
    _ms("last_triggered"),
    Column("failure_count", BigInteger, nullable=False, default=0),
    Column("rotation_count", Integer, nullable=False, default=0),
    _ms("rotated_at"),
    _ms("created_at", nullable=False),
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
    _ms("next_attempt_at", nullable=False),
    Column("lease_owner", String(64), nullable=True),
    _ms("lease_until"),
    Column("is_replay", Boolean, nullable=False, default=False),
    Column("original_event_id", String(40), nullable=True),
    _ms("created_at", nullable=False),
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
    _ms("attempted_at", nullable=False),
    _ms("response_received_at"),
    Column("response_status", Integer, nullable=True),
    Column("response_body", Text, nullable=True),
    Column("duration_ms", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("is_replay", Boolean, nullable=False, default=False),
    Column("original_event_id", String(40), nullable=True),
    Index("ix_webhook_attempts_webhook_time", "webhook_id", "attempted_at"),
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
    _ms("created_at", nullable=False),
    _ms("expires_at", nullable=False),
    Index("ix_idempotency_keys_expires", "expires_at"),
)
