"""What an accepted send writes: messages, their delivery jobs, their ``message.queued`` events and the
counters the reads and the quotas use (chat, number, contact), all queued on the batch for one flush.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, func, update

from openbloo.chats.store import ORDER_JOBS, ORDER_MESSAGES, ChatRef, ConversationRef
from openbloo.db import models as m
from openbloo.db import wakeups
from openbloo.db.batch import Batch
from openbloo.events.payloads import message_payload
from openbloo.events.store import record_event
from openbloo.ids import new_id

_chats, _nums = m.chats, m.numbers
# Last statement of the flush: every send of every API process updates its sender's row, so on PostgreSQL
# that row lock is the one writers queue for; taken last, it is held only until the commit.
ORDER_NUMBER_COUNTERS = 110

CHAT_OUTBOUND = (
    update(_chats)
    .where(_chats.c.id == bindparam("b_id"))
    .values(
        message_count=_chats.c.message_count + bindparam("b_n"),
        outbound_count=_chats.c.outbound_count + bindparam("b_n"),
        first_message_time=func.coalesce(_chats.c.first_message_time, bindparam("b_t")),
        last_message_time=bindparam("b_t"),
        last_outbound_time=bindparam("b_t"),
        last_message_id=bindparam("b_last_id"),
        last_message_text=bindparam("b_last_text"),
        last_message_direction="outbound",
        last_number_id=bindparam("b_number"),
    )
)

NUMBER_OUTBOUND = (
    update(_nums)
    .where(_nums.c.id == bindparam("b_id"))
    .values(
        outbound_count=_nums.c.outbound_count + bindparam("b_n"),
        last_used_at=bindparam("b_t"),
        last_message_sent=bindparam("b_t"),
        # Old values on the right-hand side: "same day" is judged before ``day`` is overwritten.
        day_outbound=case(
            (_nums.c.day == bindparam("b_day"), _nums.c.day_outbound + bindparam("b_n")),
            else_=bindparam("b_n"),
        ),
        day_new_conversations=case(
            (_nums.c.day == bindparam("b_day"), _nums.c.day_new_conversations + bindparam("b_new")),
            else_=bindparam("b_new"),
        ),
        day=bindparam("b_day"),
    )
)


@dataclass(slots=True)
class OutboundMessage:
    """One message row to write, with what its event needs."""

    row: dict[str, Any]
    group: dict[str, Any] | None


def new_outbound_row(
    *,
    org_id: str,
    chat: ChatRef,
    conversation: ConversationRef,
    number_id: str,
    api_key_id: str,
    now: int,
    **content: Any,
) -> dict[str, Any]:
    return {
        "id": new_id("msg_", ordered=True),
        "organization_id": org_id,
        "chat_id": chat.id,
        "conversation_id": conversation.id,
        "number_id": number_id,
        "api_key_id": api_key_id,
        "group_id": chat.group_id,
        "direction": "outbound",
        "status": "queued",
        "protocol": "pending",
        "text": content.get("text"),
        "attachments": content.get("attachments"),
        "parts": content.get("parts"),
        "effect": content.get("effect"),
        "reply_to": content.get("reply_to"),
        "link_preview": content.get("link_preview"),
        "metadata": content.get("metadata"),
        "options": content.get("options"),
        "sender": None,
        "error": None,
        "provider_id": None,
        "time_sent": now,
        "time_delivered": None,
        "time_read": None,
        "created_at": now,
    }


def record_outbound(
    batch: Batch,
    *,
    messages: list[OutboundMessage],
    chat: ChatRef,
    conversation: ConversationRef,
    number_id: str,
    phone_number: str,
    day: str,
    new_conversation: bool,
    now: int,
) -> None:
    n = len(messages)
    for om in messages:
        row = om.row
        batch.insert_later(m.messages, row, ORDER_MESSAGES)
        batch.insert_later(
            m.delivery_jobs,
            {
                "message_id": row["id"],
                "organization_id": row["organization_id"],
                "conversation_id": conversation.id,
                "number_id": number_id,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "lease_owner": None,
                "lease_until": None,
                # Stable across attempts and restarts: the transport's handle for "was this already sent?"
                "transport_ref": row["id"],
                "last_error": None,
                "created_at": now,
                "updated_at": now,
            },
            ORDER_JOBS,
        )
        record_event(
            batch,
            organization_id=row["organization_id"],
            type="message.queued",
            message_id=row["id"],
            api_key_id=row["api_key_id"],
            number_id=number_id,
            payload=message_payload(
                "message.queued",
                message_id=row["id"],
                external_id=chat.chat_key,
                internal_id=phone_number,
                number_id=number_id,
                status="queued",
                protocol="pending",
                timestamp=now,
                text=row["text"],
                attachments=row["attachments"],
                group=om.group,
            ),
            created_at=now,
        )
    batch.signal(wakeups.JOBS)
    last = messages[-1].row
    batch.execute_later(
        "chat_outbound",
        CHAT_OUTBOUND,
        {
            "b_id": chat.id,
            "b_n": n,
            "b_t": now,
            "b_last_id": last["id"],
            "b_last_text": last["text"],
            "b_number": number_id,
        },
    )
    batch.execute_later(
        "number_outbound",
        NUMBER_OUTBOUND,
        {"b_id": number_id, "b_n": n, "b_t": now, "b_day": day, "b_new": 1 if new_conversation else 0},
        ORDER_NUMBER_COUNTERS,
    )
