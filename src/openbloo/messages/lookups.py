"""What a send looks up, read for a whole writer batch at once: idempotency records, chats, conversations,
contacts (see :class:`openbloo.db.batch.UnitWithLookups`).

Each send's unit asks for the same few rows by key, one after another; a batch of sends asks for them with
one query per table. The answers land in the batch's identity map under the keys the send planner's
lookups use (:mod:`openbloo.chats.store`, :mod:`openbloo.messages.idempotency`), rows that do not exist as
:data:`~openbloo.db.batch.ABSENT`. The planner itself is unchanged: whatever it finds no answer for, it
queries as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select

from openbloo.chats.store import (
    ChatRef,
    ConversationRef,
    chat_cache_key,
    contact_cache_key,
    conversation_cache_key,
    conversations_read,
)
from openbloo.db import models as m
from openbloo.db.batch import ABSENT, Batch
from openbloo.db.inlist import InList
from openbloo.messages.idempotency import idempotency_key

_ik, _ch, _cv, _ct = m.idempotency_keys, m.chats, m.conversations, m.contacts

_IDEMPOTENCY = InList(
    lambda keys: select(_ik.c.key, _ik.c.request_hash, _ik.c.response_body, _ik.c.expires_at).where(
        _ik.c.organization_id == bindparam("org"), _ik.c.key.in_(keys)
    )
)
_CHATS = InList(
    lambda keys: select(
        _ch.c.chat_key, _ch.c.id, _ch.c.type, _ch.c.contact_id, _ch.c.group_id, _ch.c.last_number_id
    ).where(_ch.c.organization_id == bindparam("org"), _ch.c.chat_key.in_(keys))
)
_CONVERSATIONS = InList(
    lambda chat_ids: select(_cv.c.id, _cv.c.chat_id, _cv.c.number_id, _cv.c.inbound_count).where(
        _cv.c.chat_id.in_(chat_ids)
    )
)
_CONTACTS = InList(
    lambda identifiers: select(_ct.c.identifier, _ct.c.id).where(
        _ct.c.organization_id == bindparam("org"), _ct.c.identifier.in_(identifiers)
    )
)


@dataclass(frozen=True, slots=True)
class SendLookups:
    """The keys one send will look up: its idempotency key, and for a 1:1 chat its chat key (the handle)."""

    organization_id: str
    idempotency_key: str | None
    chat_key: str | None

    @classmethod
    def load_all(cls, batch: Batch, wanted: list[Any]) -> None:
        by_org: dict[str, list[SendLookups]] = {}
        for w in wanted:
            by_org.setdefault(w.organization_id, []).append(w)
        for org, sends in by_org.items():
            _load_idempotency(batch, org, [s.idempotency_key for s in sends if s.idempotency_key is not None])
            _load_chats(batch, org, [s.chat_key for s in sends if s.chat_key is not None])


def _load_idempotency(batch: Batch, org: str, keys: list[str]) -> None:
    wanted = [k for k in dict.fromkeys(keys) if batch.recall(idempotency_key(org, k)) is None]
    for part in InList.chunks(wanted):
        found: set[str] = set()
        stmt, params = _IDEMPOTENCY(part, {"org": org})
        for key, request_hash, response_body, expires_at in batch.all(stmt, params):
            found.add(key)
            # An expired record is left to the unit, which deletes it (idempotency.replay) by its own clock.
            batch.remember(idempotency_key(org, key), (request_hash, response_body, expires_at))
        for key in part:
            if key not in found:
                batch.remember(idempotency_key(org, key), ABSENT)


def _load_chats(batch: Batch, org: str, keys: list[str]) -> None:
    wanted = [k for k in dict.fromkeys(keys) if batch.recall(chat_cache_key(org, k)) is None]
    known: list[str] = []
    missing: list[str] = []
    for part in InList.chunks(wanted):
        stmt, params = _CHATS(part, {"org": org})
        seen = set()
        for key, chat_id, chat_type, contact_id, group_id, last_number_id in batch.all(stmt, params):
            seen.add(key)
            batch.remember(
                chat_cache_key(org, key), ChatRef(chat_id, key, chat_type, contact_id, group_id, last_number_id)
            )
            known.append(chat_id)
        for key in part:
            if key not in seen:
                batch.remember(chat_cache_key(org, key), ABSENT)
                missing.append(key)
    # Conversations of the chats that exist (every sender number's), and the contacts of those that do not.
    for part in InList.chunks(known):
        stmt, params = _CONVERSATIONS(part)
        for conv_id, chat_id, number_id, inbound_count in batch.all(stmt, params):
            batch.remember(
                conversation_cache_key(chat_id, number_id),
                ConversationRef(conv_id, chat_id, number_id, int(inbound_count)),
            )
        for chat_id in part:
            batch.remember(conversations_read(chat_id), True)
    for part in InList.chunks(missing):
        stmt, params = _CONTACTS(part, {"org": org})
        seen = set()
        for identifier, contact_id in batch.all(stmt, params):
            seen.add(identifier)
            batch.remember(contact_cache_key(org, identifier), contact_id)
        for identifier in part:
            if identifier not in seen:
                batch.remember(contact_cache_key(org, identifier), ABSENT)
