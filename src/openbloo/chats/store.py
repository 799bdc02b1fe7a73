"""Chats, contacts, groups and conversations, resolved or created inside a writer batch.

Every lookup goes through the batch's identity map first, so units of one batch see each other's new
rows before they are flushed. New rows are deferred (``insert_later``) with ids minted here; if another
process creates the same row first, the unique constraint fails the flush and the writer re-runs each unit
alone, which then finds the committed row. That is how racing sends create one chat, one contact, one
unnamed group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, insert, literal_column, select, update

from openbloo.addressing import Handle
from openbloo.db import models as m
from openbloo.db.batch import ABSENT, Batch
from openbloo.db.direct import Prepared
from openbloo.ids import new_id

# Flush order of deferred inserts: parents before children (foreign keys on PostgreSQL).
ORDER_CONTACTS, ORDER_GROUPS, ORDER_MEMBERS, ORDER_CHATS, ORDER_CONVERSATIONS = 10, 20, 30, 40, 50
ORDER_MESSAGES, ORDER_IDEMPOTENCY = 60, 90  # events: 80 (events/store.py)
# The organization's chat counter is the flush's very last statement, after the sender number's counters
# (110, messages/outbox.py): every writer then takes those two row locks in one order, and holds the
# organization's (wanted by every batch that makes a chat) only until its commit.
ORDER_ORG_COUNTERS = 120


# Hot lookups, built once: executing a prebuilt statement skips SQLAlchemy's per-call construction and
# cache-key work, which costs more than SQLite's own lookup.
_CONTACT_BY_IDENTIFIER = select(m.contacts.c.id, m.contacts.c.name).where(
    m.contacts.c.organization_id == bindparam("org"), m.contacts.c.identifier == bindparam("identifier")
)
_CHAT_BY_KEY = select(
    m.chats.c.id, m.chats.c.type, m.chats.c.contact_id, m.chats.c.group_id, m.chats.c.last_number_id
).where(m.chats.c.organization_id == bindparam("org"), m.chats.c.chat_key == bindparam("key"))
_CONVERSATION = select(m.conversations.c.id, m.conversations.c.inbound_count).where(
    m.conversations.c.chat_id == bindparam("chat"), m.conversations.c.number_id == bindparam("number")
)


# New rows, their values in these column orders (counters start at 0 in the INSERT itself).
_NEW_CONTACT = Prepared.insert(m.contacts, ("id", "organization_id", "identifier", "type", "created_at"))
_NEW_CHAT = Prepared(
    insert(m.chats).values(
        id=bindparam("b_id"),
        organization_id=bindparam("b_org"),
        chat_key=bindparam("b_key"),
        type=bindparam("b_type"),
        contact_id=bindparam("b_contact"),
        group_id=bindparam("b_group"),
        message_count=0,
        inbound_count=0,
        outbound_count=0,
        time_order_breaks=0,
        created_at=bindparam("b_t"),
    ),
    ("b_id", "b_org", "b_key", "b_type", "b_contact", "b_group", "b_t"),
)


def chat_time_order(t: Any) -> dict[str, Any]:
    """What the UPDATE of a chat's row for its new messages, the first sent at ``t``, sets beside its counters:
    its newest time, and one more break of the list's order if they are not newer than the newest (ties too:
    the newest message's seq is not kept, so an equal time may sort before it). Both right-hand sides read
    the row as it was (SQL's UPDATE), under the row's lock: writers of one chat are counted one after the
    other. (openbloo.chats.page_marks)
    """
    newest = m.chats.c.newest_message_time
    return {
        "time_order_breaks": m.chats.c.time_order_breaks
        + case((t <= newest, literal_column("1")), else_=literal_column("0")),
        "newest_message_time": case((newest.is_(None), t), (t > newest, t), else_=newest),
    }


# One parameter set per organization and batch: ``b_n`` is the batch's running count (``last_per``).
_ORG_NEW_CHATS = Prepared(
    update(m.organizations)
    .where(m.organizations.c.id == bindparam("b_org"))
    .values(chat_count=m.organizations.c.chat_count + bindparam("b_n")),
    ("b_org", "b_n"),
)
_NEW_CONVERSATION = Prepared(
    insert(m.conversations).values(
        id=bindparam("b_id"),
        organization_id=bindparam("b_org"),
        chat_id=bindparam("b_chat"),
        number_id=bindparam("b_number"),
        inbound_count=0,
        created_at=bindparam("b_t"),
    ),
    ("b_id", "b_org", "b_chat", "b_number", "b_t"),
)

_g = m.groups
_UNNAMED_GROUPS = select(_g.c.id, _g.c.number_id).where(
    _g.c.organization_id == bindparam("org"),
    _g.c.participants_key == bindparam("participants"),
    _g.c.auto_key.is_not(None),
    _g.c.deleted_at.is_(None),
)
_GROUP_BY_ID = select(_g.c.id, _g.c.name, _g.c.chat_guid, _g.c.number_id, _g.c.auto_key).where(
    _g.c.organization_id == bindparam("org"), _g.c.id == bindparam("group"), _g.c.deleted_at.is_(None)
)
_GROUP_MEMBERS = (
    select(m.group_members.c.identifier)
    .where(m.group_members.c.group_id == bindparam("group"), m.group_members.c.removed_at.is_(None))
    .order_by(m.group_members.c.identifier)
)


@dataclass(frozen=True, slots=True)
class ChatRef:
    id: str
    chat_key: str
    type: str  # phone | email | group
    contact_id: str | None
    group_id: str | None
    last_number_id: str | None


@dataclass(frozen=True, slots=True)
class GroupRef:
    id: str
    name: str | None
    chat_guid: str | None
    number_id: str | None
    participants: tuple[str, ...]
    is_unnamed: bool


@dataclass(frozen=True, slots=True)
class ConversationRef:
    id: str
    chat_id: str
    number_id: str
    inbound_count: int


# -- identity-map keys (also filled for whole batches by openbloo.messages.lookups) ---------------------------


def contact_cache_key(org_id: str, identifier: str) -> tuple[str, str, str]:
    return ("contact", org_id, identifier)


def chat_cache_key(org_id: str, key: str) -> tuple[str, str, str]:
    return ("chat", org_id, key)


def conversation_cache_key(chat_id: str, number_id: str) -> tuple[str, str, str]:
    return ("conv", chat_id, number_id)


def conversations_read(chat_id: str) -> tuple[str, str]:
    """Set once every stored conversation of ``chat_id`` is in the identity map: a missing one does not exist."""
    return ("convs_read", chat_id)


# -- contacts ------------------------------------------------------------------------------------------------


def ensure_contact(batch: Batch, org_id: str, handle: Handle, now: int) -> str:
    key = contact_cache_key(org_id, handle.value)
    cached = batch.recall(key)
    if cached is not None and cached is not ABSENT:
        return str(cached)
    row = None if cached is ABSENT else batch.first(_CONTACT_BY_IDENTIFIER, {"org": org_id, "identifier": handle.value})
    if row is not None:
        contact_id = str(row[0])
    else:
        contact_id = new_id("ct_", ordered=True)
        batch.add(_NEW_CONTACT, (contact_id, org_id, handle.value, handle.kind, now), ORDER_CONTACTS)
    batch.remember(key, contact_id)
    return contact_id


def contact_pending(batch: Batch, org_id: str, identifier: str) -> str | None:
    """The id of a contact this batch created or found (None if it has not seen one)."""
    known = batch.recall(contact_cache_key(org_id, identifier))
    return None if known is None or known is ABSENT else str(known)


def contact_card(batch: Batch, org_id: str, identifier: str) -> tuple[str | None, str | None]:
    """(contact id, name) of a handle: stored, or created earlier in this batch (no name yet), or (None, None)."""
    row = batch.first(_CONTACT_BY_IDENTIFIER, {"org": org_id, "identifier": identifier})
    if row is not None:
        return str(row[0]), row[1]
    return contact_pending(batch, org_id, identifier), None


# -- chats ---------------------------------------------------------------------------------------------------


def load_chat(batch: Batch, org_id: str, key_: str) -> ChatRef | None:
    key = chat_cache_key(org_id, key_)
    cached = batch.recall(key)
    if cached is not None:
        return None if cached is ABSENT else cached
    row = batch.first(_CHAT_BY_KEY, {"org": org_id, "key": key_})
    if row is None:
        return None
    chat_id, chat_type, contact_id, group_id, last_number_id = row
    ref = ChatRef(chat_id, key_, chat_type, contact_id, group_id, last_number_id)
    batch.remember(key, ref)
    return ref


def ensure_chat(
    batch: Batch,
    org_id: str,
    chat_key: str,
    chat_type: str,
    now: int,
    *,
    contact_id: str | None = None,
    group_id: str | None = None,
) -> ChatRef:
    existing = load_chat(batch, org_id, chat_key)
    if existing is not None:
        return existing
    ref = ChatRef(new_id("chat_", ordered=True), chat_key, chat_type, contact_id, group_id, None)
    batch.add(_NEW_CHAT, (ref.id, org_id, chat_key, chat_type, contact_id, group_id, now), ORDER_CHATS)
    made = (batch.recall(("new chats", org_id)) or 0) + 1
    batch.remember(("new chats", org_id), made)
    batch.add(_ORG_NEW_CHATS, (org_id, made), ORDER_ORG_COUNTERS, last_per=0)
    batch.remember(chat_cache_key(org_id, chat_key), ref)
    batch.remember(conversations_read(ref.id), True)  # a chat made just now has no conversation yet
    return ref


def note_chat_number(batch: Batch, org_id: str, chat: ChatRef, number_id: str) -> ChatRef:
    """Keep the batch's view of the sticky sender current (the UPDATE itself is queued by the outbox)."""
    if chat.last_number_id == number_id:
        return chat
    updated = ChatRef(chat.id, chat.chat_key, chat.type, chat.contact_id, chat.group_id, number_id)
    batch.remember(chat_cache_key(org_id, chat.chat_key), updated)
    return updated


# -- groups --------------------------------------------------------------------------------------------------


def _group_members(batch: Batch, group_id: str) -> tuple[str, ...]:
    return tuple(r[0] for r in batch.all(_GROUP_MEMBERS, {"group": group_id}))


def load_group(batch: Batch, org_id: str, group_id: str) -> GroupRef | None:
    key = ("group", org_id, group_id)
    cached = batch.recall(key)
    if cached is not None:
        return cached
    row = batch.first(_GROUP_BY_ID, {"org": org_id, "group": group_id})
    if row is None:
        return None
    gid, name, chat_guid, number_id, auto_key = row
    ref = GroupRef(gid, name, chat_guid, number_id, _group_members(batch, gid), auto_key is not None)
    batch.remember(key, ref)
    return ref


def unnamed_groups(batch: Batch, org_id: str, participants_key: str) -> dict[str, str]:
    """Existing unnamed groups for this participant set: sender number id → group id."""
    key = ("auto_groups", org_id, participants_key)
    cached = batch.recall(key)
    if cached is not None:
        return dict(cached)
    rows = batch.all(_UNNAMED_GROUPS, {"org": org_id, "participants": participants_key})
    found = {number_id: group_id for group_id, number_id in rows}
    batch.remember(key, dict(found))
    return found


def create_unnamed_group(batch: Batch, org_id: str, number_id: str, handles: tuple[Handle, ...], now: int) -> GroupRef:
    participants_key = ",".join(h.value for h in handles)
    group_id = new_id("grp_", ordered=True)
    batch.insert_later(
        m.groups,
        {
            "id": group_id,
            "organization_id": org_id,
            "number_id": number_id,
            "name": None,
            "chat_guid": None,
            "icon_url": None,
            "participants_key": participants_key,
            "auto_key": f"{number_id}|{participants_key}",
            "created_at": now,
            "deleted_at": None,
        },
        ORDER_GROUPS,
    )
    for h in handles:
        contact_id = ensure_contact(batch, org_id, h, now)
        batch.insert_later(
            m.group_members,
            {
                "group_id": group_id,
                "identifier": h.value,
                "contact_id": contact_id,
                "added_at": now,
                "removed_at": None,
            },
            ORDER_MEMBERS,
        )
    existing = unnamed_groups(batch, org_id, participants_key)
    existing[number_id] = group_id
    batch.remember(("auto_groups", org_id, participants_key), existing)
    ref = GroupRef(group_id, None, None, number_id, tuple(h.value for h in handles), True)
    batch.remember(("group", org_id, group_id), ref)
    return ref


# -- conversations -------------------------------------------------------------------------------------------


def load_conversation(batch: Batch, chat_id: str, number_id: str) -> ConversationRef | None:
    key = conversation_cache_key(chat_id, number_id)
    cached = batch.recall(key)
    if cached is not None:
        return cached
    if batch.recall(conversations_read(chat_id)):
        return None  # every stored conversation of the chat was read for this batch: this one does not exist
    row = batch.first(_CONVERSATION, {"chat": chat_id, "number": number_id})
    if row is None:
        return None
    ref = ConversationRef(row[0], chat_id, number_id, int(row[1]))
    batch.remember(key, ref)
    return ref


def ensure_conversation(batch: Batch, org_id: str, chat_id: str, number_id: str, now: int) -> ConversationRef:
    existing = load_conversation(batch, chat_id, number_id)
    if existing is not None:
        return existing
    ref = ConversationRef(new_id("conv_", ordered=True), chat_id, number_id, 0)
    batch.add(_NEW_CONVERSATION, (ref.id, org_id, chat_id, number_id, now), ORDER_CONVERSATIONS)
    batch.remember(conversation_cache_key(chat_id, number_id), ref)
    return ref


_CONVERSATION_DEVICE_CHAT = (
    update(m.conversations)
    .where(m.conversations.c.id == bindparam("b_id"))
    .values(device_chat_guid=bindparam("b_guid"))
)


def learn_device_chat(batch: Batch, conversation_id: str, device_chat: str) -> None:
    """The device told which of its chats a 1:1 conversation is (on a send's receipt or an inbound message):
    later sends go straight there. Both paths queue this one statement under one key, so a worker batch that
    holds both runs them as one executemany."""
    batch.execute_later(
        _CONVERSATION_DEVICE_CHAT, _CONVERSATION_DEVICE_CHAT, {"b_id": conversation_id, "b_guid": device_chat}
    )


_GROUP_CHAT_GUID = (
    update(m.groups)
    .where(m.groups.c.id == bindparam("b_group"), m.groups.c.chat_guid.is_(None))
    .values(chat_guid=bindparam("b_guid"))
)


def learn_group_chat(batch: Batch, group_id: str, chat_guid: str) -> None:
    """The device told which of its chats a group is (a first send's receipt, or a message received in a group
    chat openbloo did not know): later sends go straight there. A group keeps the first chat it learns. One
    statement under one key for both paths, like :func:`learn_device_chat`."""
    batch.execute_later(_GROUP_CHAT_GUID, _GROUP_CHAT_GUID, {"b_group": group_id, "b_guid": chat_guid})


def count_inbound(batch: Batch, conv: ConversationRef) -> None:
    """Keep the batch's view of a conversation's inbound counter current (the UPDATE is queued by the caller)."""
    # Built directly: dataclasses.replace() costs several times more.
    updated = ConversationRef(conv.id, conv.chat_id, conv.number_id, conv.inbound_count + 1)
    batch.remember(conversation_cache_key(conv.chat_id, conv.number_id), updated)
