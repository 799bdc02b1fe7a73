"""Per-number plans and quotas at acceptance (DECISIONS.md §5, §11): inbound-only, first message, daily
outbound limit, daily new-conversation cap. Counters are read once per batch and updated in it, so a batch
of sends is judged as if they came one after another.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from openbloo.auth.context import PoolNumber
from openbloo.chats.store import ConversationRef
from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.errors import ApiError
from openbloo.messages.rules import SendRequest

# Transports on which the first message of a conversation may not be attachments alone (DECISIONS.md §5).
IMESSAGE_TRANSPORTS = frozenset({"simulator", "bluebubbles", "hybrid"})


_DAY_MS = 86_400_000
_day_cache: tuple[int, str] = (-1, "")


def day_of(now: int) -> str:
    """The UTC day of ``now`` as YYYY-MM-DD; formatted once per day, not once per send."""
    global _day_cache
    day_number = now // _DAY_MS
    cached = _day_cache
    if cached[0] != day_number:
        cached = _day_cache = (day_number, datetime.fromtimestamp(now / 1000, tz=UTC).strftime("%Y-%m-%d"))
    return cached[1]


def _number_day(batch: Batch, number: PoolNumber, now: int) -> dict[str, Any]:
    key = ("num_day", number.id)
    state = batch.recall(key)
    if state is None:
        t = m.numbers
        row = batch.conn.execute(
            select(t.c.day, t.c.day_outbound, t.c.day_new_conversations).where(t.c.id == number.id)
        ).one()
        current = day_of(now)
        same = row.day == current
        state = {
            "day": current,
            "outbound": row.day_outbound if same else 0,
            "new_conversations": row.day_new_conversations if same else 0,
        }
        batch.remember(key, state)
    return state


def count_day(batch: Batch, number: PoolNumber, n: int, new_conversation: bool, now: int) -> None:
    if number.daily_limit is None and number.new_conversation_cap is None:
        return
    state = dict(_number_day(batch, number, now))
    state["outbound"] += n
    state["new_conversations"] += 1 if new_conversation else 0
    batch.remember(("num_day", number.id), state)


def check_plan(
    batch: Batch,
    number: PoolNumber,
    recipient: str,
    conv: ConversationRef | None,
    request: SendRequest,
    now: int,
) -> None:
    inbound = conv.inbound_count if conv is not None else 0
    empty = conv is None  # a conversation row exists once a message went either way
    if number.plan_kind == "inbound" and inbound == 0:
        raise ApiError(
            403,
            "inbound_only_no_prior_inbound",
            "Inbound-only plan: outbound is restricted to contacts who messaged this number first.",
            allocation_id=number.id,
            external_id=recipient,
        )
    if request.attachments_only and empty and number.transport in IMESSAGE_TRANSPORTS:
        raise ApiError(
            400,
            "attachment_first_message_not_allowed",
            "An attachment cannot be the first message of a conversation; send text first",
        )
    if number.daily_limit is not None:
        state = _number_day(batch, number, now)
        if state["outbound"] + len(request.bubbles) > number.daily_limit:
            raise ApiError(
                429,
                "outbound_limit_reached",
                f"Daily outbound limit of {number.daily_limit} messages reached for {number.phone_number}",
                headers={"x-should-retry": "false"},
                limit=number.daily_limit,
                current=state["outbound"],
                mode="per_number",
                allocation_id=number.id,
                sender_number=number.phone_number,
            )
    if number.new_conversation_cap is not None and empty:
        state = _number_day(batch, number, now)
        if state["new_conversations"] >= number.new_conversation_cap:
            raise ApiError(
                429,
                "new_conversation_limit_reached",
                f"Daily cap of {number.new_conversation_cap} new conversations reached for {number.phone_number}",
                headers={"x-should-retry": "false"},
                plan_id=number.plan_kind or "dedicated",
                cap=number.new_conversation_cap,
                current=state["new_conversations"],
            )
