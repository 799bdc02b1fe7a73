"""Chats, the conversations of a chat on each sender number, and their messages, reactions and opt-outs."""

from __future__ import annotations

from sqlalchemy import (
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
    literal_column,
)

from openbloo.db.models.base import OptionalJSON, SeqType, epoch_ms, metadata, partial

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
    epoch_ms("first_message_time"),
    epoch_ms("last_message_time"),
    epoch_ms("last_inbound_time"),
    epoch_ms("last_outbound_time"),
    Column("last_message_id", String(40), nullable=True),
    Column("last_message_text", Text, nullable=True),
    Column("last_message_direction", String(10), nullable=True),
    epoch_ms("created_at", nullable=False),
    # The newest ``time_sent`` of the chat's messages, and how many messages were stored before it in the list's
    # order (not newer than the newest when written: an API process that stamped a send before another's
    # committed, a worker's inbound message). Written by the UPDATE every message makes here anyway; the API
    # process's page marks of a chat hold while the count is what it was (openbloo.chats.page_marks).
    epoch_ms("newest_message_time"),
    Column("time_order_breaks", BigInteger, nullable=False, default=0, server_default="0"),
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
    epoch_ms("lease_until"),
    epoch_ms("created_at", nullable=False),
    # The device's own id for this 1:1 chat (BlueBubbles ``iMessage;-;+1555…`` or ``any;-;+1555…``), learnt
    # from the device; sends go to the chat the device really uses. Groups keep theirs in ``groups.chat_guid``.
    Column("device_chat_guid", String(255), nullable=True),
    UniqueConstraint("chat_id", "number_id"),
)

_JOB_PENDING_SQL = "job_state = 'pending'"  # the partial indexes' predicate (JOB_IS_PENDING, below)

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
    Column("provider_id", String(255), nullable=True),
    epoch_ms("time_sent", nullable=False),
    epoch_ms("time_delivered"),
    epoch_ms("time_read"),
    epoch_ms("created_at", nullable=False),
    # An outgoing message's delivery job, in the message's own row (migration 0010: a table of its own cost
    # every send a second row, its id index and a statement). NULL for a message nobody sends (inbound).
    # pending → (started: job_lease_owner set) → done | failed | cancelled; the claims lease conversations
    # and send their pending messages in ``seq`` (acceptance) order (openbloo.delivery).
    Column("job_state", String(20), nullable=True),
    Column("job_attempts", Integer, nullable=True),
    epoch_ms("job_next_attempt_at"),
    # The worker whose attempt started and whose outcome is not recorded yet: after a crash the next claim
    # sees it and asks the device whether the message (its reference: the message's id) already went out.
    Column("job_lease_owner", String(64), nullable=True),
    # While an attempt is in flight, when it started (a device search for it starts there).
    epoch_ms("job_updated_at"),
    Column("job_last_error", Text, nullable=True),
    Index("ix_messages_chat_time", "chat_id", "time_sent", "seq"),
    # The claims read pending jobs only, in acceptance order, and this partial index holds just those: a send
    # adds its entry at the end, a finished job leaves it, and while the workers keep up it is small and stays
    # in cache. Queries name the literal (JOB_IS_PENDING, below) to use it.
    Index("ix_messages_job_pending", "seq", **partial(_JOB_PENDING_SQL)),
    # Restart recovery looks for messages left "sent" (receipts to re-arm), and only for those: a partial
    # index holds just them, so the status changes of every other message write no index entry.
    Index("ix_messages_sent", "status", **partial("status = 'sent'")),
    # One device message is one openbloo message: devices repeat their news (BlueBubbles sends
    # ``new-message`` twice, the reconciler re-reads what webhooks brought), and racing writers of the same
    # device id fail at flush and are re-run, which then finds the stored row.
    # Both provider-id indexes hold only the messages a device has named: an accepted message has no id
    # yet, and each send wrote two entries for it (moved again once the id came). A lookup by
    # ``provider_id = ...`` implies it is not NULL, so both stores use them with a bound parameter too.
    Index("ix_messages_number_provider", "number_id", "provider_id", unique=True, **partial("provider_id IS NOT NULL")),
    Index("ix_messages_provider_id", "provider_id", **partial("provider_id IS NOT NULL")),
)
# "This message's job is pending", as the partial index above is defined: PostgreSQL's generic plans use
# a partial index only for a query whose WHERE names the same literal.
JOB_IS_PENDING = messages.c.job_state == literal_column("'pending'")
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
    epoch_ms("opted_out_at", nullable=False),
)

reactions = Table(
    "reactions",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("message_id", String(40), ForeignKey("messages.id"), nullable=False, index=True),
    Column("reaction", String(64), nullable=False),
    Column("is_added", Boolean, nullable=False),
    Column("sender", String(320), nullable=True),
    epoch_ms("time_sent", nullable=False),
)
