"""Queries behind the message reads: one message by id, in the chat the path names, in the caller's org."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from openbloo.addressing import ChatAddress
from openbloo.db import models as m
from openbloo.errors import not_found


def chat_matches(address: ChatAddress, chat_key: str, participants_key: str | None) -> bool:
    if address.kind == "multi":
        return participants_key == address.key
    return chat_key == address.key


async def load_message(conn: AsyncConnection, org_id: str, address: ChatAddress, message_id: str) -> dict[str, Any]:
    msg, chat, num, con, grp = m.messages, m.chats, m.numbers, m.contacts, m.groups
    row = (
        await conn.execute(
            select(
                msg,
                chat.c.chat_key,
                grp.c.participants_key,
                num.c.phone_number.label("internal_id"),
                con.c.id.label("contact_id"),
                con.c.identifier.label("contact_identifier"),
                con.c.name.label("contact_name"),
            )
            .join(chat, chat.c.id == msg.c.chat_id)
            .outerjoin(grp, grp.c.id == chat.c.group_id)
            .outerjoin(num, num.c.id == msg.c.number_id)
            .outerjoin(con, con.c.id == chat.c.contact_id)
            .where(msg.c.id == message_id, msg.c.organization_id == org_id)
        )
    ).first()
    if row is None or not chat_matches(address, row.chat_key, row.participants_key):
        raise not_found(f"Message {message_id} not found in chat {address.key}")
    reactions = [
        {"reaction": r.reaction, "is_added": bool(r.is_added), "sender": r.sender, "time_sent": r.time_sent}
        for r in await conn.execute(
            select(m.reactions).where(m.reactions.c.message_id == message_id).order_by(m.reactions.c.seq)
        )
    ]
    return message_view(row, reactions)


def message_view(row: Any, reactions: list[dict[str, Any]]) -> dict[str, Any]:
    contact = None
    if row.contact_id is not None:
        contact = {
            "contact_id": row.contact_id,
            "identifier": row.contact_identifier,
            "name": row.contact_name,
        }
    return {
        "message_id": row.id,
        "chat_id": row.chat_key,
        "direction": row.direction,
        "internal_id": row.internal_id,
        "contact": contact,
        "sender": row.sender,
        "text": row.text,
        "attachments": row.attachments or [],
        "reactions": reactions,
        "time_sent": row.time_sent,
        "time_delivered": row.time_delivered,
        "time_read": row.time_read,
        "status": row.status,
        "protocol": row.protocol,
        "error": row.error,
        "reply_to": row.reply_to,
        "effect": row.effect,
        "metadata": row.metadata,
    }
