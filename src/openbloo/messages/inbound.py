"""Inbound messages: a device received something; store it in the right chat and emit ``message.received``.

Used by every transport's inbound path (simulator injection, BlueBubbles and Twilio callbacks). The
contact, the chat and the conversation are created on first contact. A message whose ``provider_id`` is
already stored (or queued by an earlier unit of the same batch) is a duplicate delivery of the same news
and is not stored twice; racing writers in different batches are stopped by the unique index on
``(number_id, provider_id)`` and re-run, which then finds the stored row.

A device group chat seen for the first time becomes an unnamed group, or links the unnamed group this number
already has with the same participants (a group openbloo created by sending).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update

from openbloo.addressing import normalize_handle
from openbloo.chats import store
from openbloo.chats.store import ORDER_MESSAGES, chat_time_order
from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.delivery.state import _group_info
from openbloo.errors import ApiError
from openbloo.events.payloads import message_payload
from openbloo.events.store import record_event
from openbloo.ids import new_id
from openbloo.transports.base import InboundMessage

_chats, _convs, _nums = m.chats, m.conversations, m.numbers

CHAT_INBOUND = (
    update(_chats)
    .where(_chats.c.id == bindparam("b_id"))
    .values(
        message_count=_chats.c.message_count + 1,
        inbound_count=_chats.c.inbound_count + 1,
        first_message_time=func.coalesce(_chats.c.first_message_time, bindparam("b_t")),
        last_message_time=bindparam("b_t"),
        last_inbound_time=bindparam("b_t"),
        last_message_id=bindparam("b_last_id"),
        last_message_text=bindparam("b_last_text"),
        last_message_direction="inbound",
        last_number_id=bindparam("b_number"),
        **chat_time_order(bindparam("b_t")),
    )
)
CONVERSATION_INBOUND = (
    update(_convs).where(_convs.c.id == bindparam("b_id")).values(inbound_count=_convs.c.inbound_count + 1)
)
NUMBER_INBOUND = (
    update(_nums)
    .where(_nums.c.id == bindparam("b_id"))
    .values(inbound_count=_nums.c.inbound_count + 1, last_active_at=bindparam("b_t"))
)


@dataclass(frozen=True, slots=True)
class StoredInbound:
    message_id: str
    chat_id: str  # the API chat id (handle or grp_ id)
    organization_id: str
    duplicate: bool = False


def record_inbound(msg: InboundMessage, *, organization_id: str | None = None) -> Callable[[Batch], StoredInbound]:
    def unit(batch: Batch) -> StoredInbound:
        n = _nums
        number = batch.conn.execute(
            select(n.c.id, n.c.organization_id, n.c.phone_number).where(n.c.phone_number == msg.to)
        ).first()
        if number is None or (organization_id is not None and number.organization_id != organization_id):
            raise ApiError(404, "not_found", f"{msg.to} is not a number of this organization")
        org = number.organization_id
        if msg.provider_id:
            pending = batch.recall(("inbound", org, msg.provider_id))
            if pending is not None:
                return StoredInbound(pending[0], pending[1], org, duplicate=True)
            seen = batch.conn.execute(
                select(m.messages.c.id, _chats.c.chat_key)
                .join(_chats, _chats.c.id == m.messages.c.chat_id)
                .where(m.messages.c.organization_id == org, m.messages.c.provider_id == msg.provider_id)
            ).first()
            if seen is not None:
                return StoredInbound(seen.id, seen.chat_key, org, duplicate=True)
        sender = normalize_handle(msg.sender)
        now = msg.received_at
        group_id = msg.group_id
        if group_id is None and msg.chat_guid:
            g = m.groups
            row = batch.conn.execute(
                select(g.c.id).where(
                    g.c.organization_id == org, g.c.chat_guid == msg.chat_guid, g.c.deleted_at.is_(None)
                )
            ).first()
            if row is not None:
                group_id = row.id
            else:
                handles = tuple(
                    sorted({sender, *(normalize_handle(p) for p in msg.participants)}, key=lambda h: h.value)
                )
                known = store.unnamed_groups(batch, org, ",".join(h.value for h in handles)).get(number.id)
                group_id = known or store.create_unnamed_group(batch, org, number.id, handles, now).id
                store.learn_group_chat(batch, group_id, msg.chat_guid)
        if group_id is not None:
            found = store.load_group(batch, org, group_id)
            if found is None:
                raise ApiError(404, "group_not_found", f"Group {group_id} not found")
            chat = store.ensure_chat(batch, org, found.id, "group", now, group_id=found.id)
            author: str | None = sender.value
        else:
            existing = store.load_chat(batch, org, sender.value)
            if existing is None:
                contact_id = store.ensure_contact(batch, org, sender, now)
                existing = store.ensure_chat(batch, org, sender.value, sender.kind, now, contact_id=contact_id)
            chat = existing
            author = None
        conv = store.ensure_conversation(batch, org, chat.id, number.id, now)
        if msg.device_chat and group_id is None:
            store.learn_device_chat(batch, conv.id, msg.device_chat)
        message_id = new_id("msg_", ordered=True)
        attachments = [dict(a) for a in msg.attachments] or None
        batch.insert_later(
            m.messages,
            {
                "id": message_id,
                "organization_id": org,
                "chat_id": chat.id,
                "conversation_id": conv.id,
                "number_id": number.id,
                "api_key_id": None,
                "group_id": chat.group_id,
                "direction": "inbound",
                "status": "received",
                "protocol": msg.protocol,
                "text": msg.text,
                "attachments": attachments,
                "parts": None,
                "effect": None,
                "reply_to": None,
                "link_preview": None,
                "metadata": None,
                "options": None,
                "sender": author,
                "error": None,
                "provider_id": msg.provider_id,
                "time_sent": now,
                "time_delivered": None,
                "time_read": None,
                "created_at": now,
            },
            ORDER_MESSAGES,
        )

        def payload() -> dict[str, Any]:
            return message_payload(
                "message.received",
                message_id=message_id,
                external_id=chat.chat_key,
                internal_id=number.phone_number,
                number_id=number.id,
                status="received",
                protocol=msg.protocol,
                timestamp=now,
                text=msg.text,
                attachments=attachments or [],
                group=_group_info_pending(batch, org, chat.group_id) if chat.group_id else None,
                sender=sender.value,
                received_at=now,
            )

        record_event(
            batch,
            organization_id=org,
            type="message.received",
            message_id=message_id,
            number_id=number.id,
            payload=payload,
            created_at=now,
        )
        batch.execute_later(
            "chat_inbound",
            CHAT_INBOUND,
            {"b_id": chat.id, "b_t": now, "b_last_id": message_id, "b_last_text": msg.text, "b_number": number.id},
        )
        batch.execute_later("conversation_inbound", CONVERSATION_INBOUND, {"b_id": conv.id, "b_t": now})
        batch.execute_later("number_inbound", NUMBER_INBOUND, {"b_id": number.id, "b_t": now})
        store.count_inbound(batch, conv)
        store.note_chat_number(batch, org, chat, number.id)
        if msg.provider_id:
            batch.remember(("inbound", org, msg.provider_id), (message_id, chat.chat_key))
        return StoredInbound(message_id, chat.chat_key, org)

    return unit


def _group_info_pending(batch: Batch, org: str, group_id: str) -> dict[str, Any]:
    """Group fields for the payload, also for a group created in this same batch (not yet flushed)."""
    pending = store.load_group(batch, org, group_id)
    info = _group_info(batch, group_id)
    if pending is not None and not info["participants"]:
        info = dict(info)
        info["participants"] = [
            {"contact_id": store.contact_pending(batch, org, p), "identifier": p, "name": None}
            for p in pending.participants
        ]
    return info
