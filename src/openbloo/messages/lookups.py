"""What a send looks up, read for a whole writer batch at once: idempotency records, chats, conversations,
contacts, the organization's webhook subscriptions and whether its numbers have opt-outs (see
:class:`openbloo.db.batch.UnitWithLookups`).

Each send's unit asks for the same few rows by key, one after another; a batch of sends asks for them with
one query per table, and on PostgreSQL sends all those queries in one pipeline (one round trip). The
answers land in the batch's identity map under the keys the send planner's lookups use
(:mod:`openbloo.chats.store`, :mod:`openbloo.messages.idempotency`, :mod:`openbloo.events.fanout`,
:mod:`openbloo.devices.optouts`), rows that do not exist as :data:`~openbloo.db.batch.ABSENT`. The planner
itself is unchanged: whatever it finds no answer for, it queries as before.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select

from openbloo.auth.context import PoolNumber
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
from openbloo.devices.optouts import numbers_with_opt_outs_query, opt_outs_unknown, remember_numbers_with_opt_outs
from openbloo.events.fanout import remember_subscriptions, subscriptions_key, subscriptions_query
from openbloo.messages.idempotency import idempotency_key

# What to do with one planned read's rows (they arrive in the order the reads were planned).
Answer = Callable[[list[Any]], object]

_ik, _ch, _cv, _ct = m.idempotency_keys, m.chats, m.conversations, m.contacts

_IDEMPOTENCY = InList(
    lambda keys: select(_ik.c.key, _ik.c.request_hash, _ik.c.response_body, _ik.c.expires_at).where(
        _ik.c.organization_id == bindparam("org"), _ik.c.key.in_(keys)
    )
)
# The chats with these keys and each one's conversations (a row per conversation; one with NULLs for a chat
# that has none): one read of the chats' index, where a read of the conversations by their chats' keys
# read it again.
_CHATS_AND_CONVERSATIONS = InList(
    lambda keys: (
        select(
            _ch.c.chat_key,
            _ch.c.id,
            _ch.c.type,
            _ch.c.contact_id,
            _ch.c.group_id,
            _ch.c.last_number_id,
            _cv.c.id,
            _cv.c.number_id,
            _cv.c.inbound_count,
        )
        .outerjoin(_cv, _cv.c.chat_id == _ch.c.id)
        .where(_ch.c.organization_id == bindparam("org"), _ch.c.chat_key.in_(keys))
    )
)
_CONTACTS = InList(
    lambda identifiers: select(_ct.c.identifier, _ct.c.id).where(
        _ct.c.organization_id == bindparam("org"), _ct.c.identifier.in_(identifiers)
    )
)


@dataclass(frozen=True, slots=True, eq=False)
class SendLookups:
    """The keys one send will look up: its idempotency key, for a 1:1 chat its chat key (the handle), and the
    sender numbers it may use (whose opt-out lists the planner checks)."""

    organization_id: str
    idempotency_key: str | None
    chat_key: str | None
    numbers: tuple[PoolNumber, ...] = ()

    @classmethod
    def load_all(cls, batch: Batch, wanted: list[Any]) -> None:
        by_org: dict[str, list[SendLookups]] = {}
        for w in wanted:
            by_org.setdefault(w.organization_id, []).append(w)
        # Every read is planned first and they run together (Batch.all_many: one round trip on PostgreSQL),
        # so none may need another's answer: conversations are found by their chat's key, not its id, and on
        # PostgreSQL contacts are read for every handle, also those whose chat exists (a read that finds
        # them costs nothing there; on SQLite, where reads are calls, only handles without a chat are read,
        # after the rest).
        reads: list[tuple[Any, dict[str, Any]]] = []
        answers: list[Answer] = []
        later: list[Callable[[], None]] = []
        for org, sends in by_org.items():
            _plan_idempotency(batch, org, [s.idempotency_key for s in sends if s.idempotency_key], reads, answers)
            keys = [s.chat_key for s in sends if s.chat_key is not None]
            missing = _plan_chats(batch, org, keys, reads, answers)
            if batch.is_postgres:
                _plan_contacts(batch, org, missing, reads, answers)
            else:
                later.append(functools.partial(_read_contacts, batch, org, missing))
            if batch.recall(subscriptions_key(org)) is None:
                reads.append(subscriptions_query(org))
                answers.append(functools.partial(remember_subscriptions, batch, org))
            _plan_opt_outs(batch, sends, reads, answers)
        for rows, answer in zip(batch.all_many(reads), answers, strict=True):
            answer(rows)
        for step in later:
            step()


def _plan_idempotency(batch: Batch, org: str, keys: list[str], reads: list[Any], answers: list[Answer]) -> None:
    wanted = [k for k in dict.fromkeys(keys) if batch.recall(idempotency_key(org, k)) is None]
    for part in InList.chunks(wanted):

        def answer(rows: list[Any], part: Sequence[str] = part) -> None:
            found: set[str] = set()
            for key, request_hash, response_body, expires_at in rows:
                found.add(key)
                # An expired record is left to the unit, which deletes it (idempotency.replay) by its own clock.
                batch.remember(idempotency_key(org, key), (request_hash, response_body, expires_at))
            for key in part:
                if key not in found:
                    batch.remember(idempotency_key(org, key), ABSENT)

        reads.append(_IDEMPOTENCY(part, {"org": org}))
        answers.append(answer)


def _plan_chats(batch: Batch, org: str, keys: list[str], reads: list[Any], answers: list[Answer]) -> list[str]:
    """Plans the reads of the chats with ``keys`` and of their conversations; returns the keys it reads (their
    contacts are wanted if the chat turns out not to exist)."""
    wanted = [k for k in dict.fromkeys(keys) if batch.recall(chat_cache_key(org, k)) is None]
    for part in InList.chunks(wanted):

        def answer(rows: list[Any], part: Sequence[str] = part) -> None:
            found: set[str] = set()
            for key, chat_id, chat_type, contact_id, group_id, last_number_id, conv_id, number_id, inbound in rows:
                if key not in found:
                    found.add(key)
                    batch.remember(
                        chat_cache_key(org, key),
                        ChatRef(chat_id, key, chat_type, contact_id, group_id, last_number_id),
                    )
                    batch.remember(conversations_read(chat_id), True)  # every conversation of it is known now
                if conv_id is not None:
                    batch.remember(
                        conversation_cache_key(chat_id, number_id),
                        ConversationRef(conv_id, chat_id, number_id, int(inbound)),
                    )
            for key in part:
                if key not in found:
                    batch.remember(chat_cache_key(org, key), ABSENT)

        reads.append(_CHATS_AND_CONVERSATIONS(part, {"org": org}))
        answers.append(answer)
    return wanted


def _plan_contacts(batch: Batch, org: str, identifiers: list[str], reads: list[Any], answers: list[Answer]) -> None:
    for part in InList.chunks(identifiers):
        reads.append(_CONTACTS(part, {"org": org}))
        answers.append(functools.partial(_remember_contacts, batch, org, part))


def _read_contacts(batch: Batch, org: str, keys: list[str]) -> None:
    """SQLite: the contacts of the handles whose chat does not exist (read after the chats)."""
    missing = [k for k in keys if batch.recall(chat_cache_key(org, k)) is ABSENT]
    for part in InList.chunks(missing):
        _remember_contacts(batch, org, part, batch.all(*_CONTACTS(part, {"org": org})))


def _remember_contacts(batch: Batch, org: str, identifiers: Sequence[str], rows: list[Any]) -> None:
    seen = set()
    for identifier, contact_id in rows:
        seen.add(identifier)
        batch.remember(contact_cache_key(org, identifier), contact_id)
    for identifier in identifiers:
        if identifier not in seen:
            batch.remember(contact_cache_key(org, identifier), ABSENT)


# Above this many sender numbers a send's opt-out lists are not read ahead: the planner probes the one it
# picks, as it always could (a pool of hundreds would read hundreds of flags per batch for one number's).
_OPT_OUT_NUMBERS_AHEAD = 16


def _plan_opt_outs(batch: Batch, sends: list[SendLookups], reads: list[Any], answers: list[Answer]) -> None:
    ids = opt_outs_unknown(batch, dict.fromkeys(n.id for s in sends for n in s.numbers if n.is_active))
    if not ids or len(ids) > _OPT_OUT_NUMBERS_AHEAD:
        return
    reads.append(numbers_with_opt_outs_query(ids))
    answers.append(functools.partial(remember_numbers_with_opt_outs, batch, ids))
