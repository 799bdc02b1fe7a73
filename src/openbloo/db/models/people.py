"""Whom they write to: contacts (with tags) and groups (with members)."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Table, Text, UniqueConstraint

from openbloo.db.models.base import epoch_ms, metadata

contacts = Table(
    "contacts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("organization_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("identifier", String(320), nullable=False),
    Column("type", String(10), nullable=False),
    Column("name", String(255), nullable=True),
    epoch_ms("created_at", nullable=False),
    # A contact's last message time is its chat's (chats.last_message_time): not kept here too, where every
    # send would update one more row.
    epoch_ms("deleted_at"),
    UniqueConstraint("organization_id", "identifier"),
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("contact_id", String(40), ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(255), primary_key=True),
    epoch_ms("created_at", nullable=False),
    epoch_ms("deleted_at"),
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
    epoch_ms("created_at", nullable=False),
    epoch_ms("deleted_at"),
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
    epoch_ms("added_at", nullable=False),
    epoch_ms("removed_at"),
)
