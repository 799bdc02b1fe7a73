"""What an accepted send writes: messages (each with its delivery job, pending), their ``message.queued``
events and the counters the reads and the quotas use (chat, number, contact), all queued on the batch for one flush.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, func, update

from openbloo.chats.store import ORDER_MESSAGES, ChatRef, ConversationRef, chat_time_order
from openbloo.db import models as m
from openbloo.db import wakeups
from openbloo.db.batch import Batch
from openbloo.db.direct import Prepared
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
        **chat_time_order(bindparam("b_t")),
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


_MESSAGE = Prepared.insert(
    m.messages,
    (
        "id",
        "organization_id",
        "chat_id",
        "conversation_id",
        "number_id",
        "api_key_id",
        "group_id",
        "direction",
        "status",
        "protocol",
        "text",
        "attachments",
        "parts",
        "effect",
        "reply_to",
        "link_preview",
        "metadata",
        "options",
        "time_sent",
        "created_at",
        "job_state",
        "job_attempts",
        "job_next_attempt_at",
        "job_updated_at",
    ),
)
_CHAT_OUTBOUND = Prepared(CHAT_OUTBOUND, ("b_id", "b_n", "b_t", "b_last_id", "b_last_text", "b_number"))


def _number_counters_summed(sets: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """A batch's sends from one number on one day as one UPDATE of its row: the statement adds ``b_n`` and
    ``b_new`` to the counters, so adding their sums once writes what adding each did, and the latest time
    is the one that stays. (One UPDATE of the same row per send was 1.5 % of an accepted send's CPU.)"""
    summed: dict[tuple[Any, Any], list[Any]] = {}
    for number_id, n, t, day, new in sets:
        acc = summed.get((number_id, day))
        if acc is None:
            summed[(number_id, day)] = [number_id, n, t, day, new]
        else:
            acc[1] += n
            acc[2] = max(acc[2], t)
            acc[4] += new
    return [tuple(acc) for acc in summed.values()]


_NUMBER_OUTBOUND = Prepared(NUMBER_OUTBOUND, ("b_id", "b_n", "b_t", "b_day", "b_new"), combine=_number_counters_summed)


@dataclass(slots=True)
class OutboundMessage:
    """One message to write (``row``: its values in the INSERT's column order), with what its event needs."""

    id: str
    text: str | None
    attachments: list[dict[str, Any]] | None
    group: dict[str, Any] | None
    row: tuple[Any, ...]


def new_outbound(
    *,
    org_id: str,
    chat: ChatRef,
    conversation: ConversationRef,
    number_id: str,
    api_key_id: str,
    now: int,
    group: dict[str, Any] | None,
    text: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
    parts: list[dict[str, Any]] | None = None,
    effect: str | None = None,
    reply_to: dict[str, Any] | None = None,
    link_preview: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> OutboundMessage:
    message_id = new_id("msg_", ordered=True)
    row = (
        message_id,
        org_id,
        chat.id,
        conversation.id,
        number_id,
        api_key_id,
        chat.group_id,
        "outbound",
        "queued",
        "pending",
        text,
        attachments,
        parts,
        effect,
        reply_to,
        link_preview,
        metadata,
        options,
        now,
        now,
        "pending",  # its delivery job: due now
        0,
        now,
        now,
    )
    return OutboundMessage(message_id, text, attachments, group, row)


def record_outbound(
    batch: Batch,
    *,
    messages: list[OutboundMessage],
    org_id: str,
    api_key_id: str,
    chat: ChatRef,
    conversation: ConversationRef,
    number_id: str,
    phone_number: str,
    day: str,
    new_conversation: bool,
    now: int,
) -> None:
    for om in messages:
        batch.add(_MESSAGE, om.row, ORDER_MESSAGES)
        record_event(
            batch,
            organization_id=org_id,
            type="message.queued",
            message_id=om.id,
            api_key_id=api_key_id,
            number_id=number_id,
            payload=functools.partial(
                message_payload,
                "message.queued",
                message_id=om.id,
                external_id=chat.chat_key,
                internal_id=phone_number,
                number_id=number_id,
                status="queued",
                protocol="pending",
                timestamp=now,
                text=om.text,
                attachments=om.attachments,
                group=om.group,
            ),
            created_at=now,
        )
    batch.signal(wakeups.JOBS)
    last = messages[-1]
    batch.add(_CHAT_OUTBOUND, (chat.id, len(messages), now, last.id, last.text, number_id))
    batch.add(
        _NUMBER_OUTBOUND,
        (number_id, len(messages), now, day, 1 if new_conversation else 0),
        ORDER_NUMBER_COUNTERS,
    )
