"""The schema: SQLAlchemy Core tables, the single source the Alembic migrations are generated from.

Conventions: public ids are prefixed random strings (``msg_``, ``grp_`` ...); times are UTC epoch ms
(BIGINT); counters the API lists (message counts, usage) are maintained on write, so reads never count
rows. Tables that need acceptance order (messages and their delivery jobs, events, deliveries) have an integer ``seq``
primary key assigned at insert.

One module a group of tables with one owner; every name is here too, as ``models.<name>``.
"""

from __future__ import annotations

from openbloo.db.models.account import api_keys, idempotency_keys, number_api_keys, numbers, organizations
from openbloo.db.models.base import OptionalJSON, SeqType, metadata
from openbloo.db.models.chats import (
    JOB_IS_PENDING,
    MESSAGE_IS_SENT,
    chats,
    conversations,
    messages,
    opt_outs,
    reactions,
)
from openbloo.db.models.people import contact_tags, contacts, group_members, groups
from openbloo.db.models.webhooks import events, webhook_attempts, webhook_deliveries, webhooks

__all__ = [
    "JOB_IS_PENDING",
    "MESSAGE_IS_SENT",
    "OptionalJSON",
    "SeqType",
    "api_keys",
    "chats",
    "contact_tags",
    "contacts",
    "conversations",
    "events",
    "group_members",
    "groups",
    "idempotency_keys",
    "messages",
    "metadata",
    "number_api_keys",
    "numbers",
    "opt_outs",
    "organizations",
    "reactions",
    "webhook_attempts",
    "webhook_deliveries",
    "webhooks",
]
