"""Delivery jobs as units of work: mark attempts, record outcomes, release, cancel (the claim that finds
and leases them is :mod:`openbloo.delivery.claims`). A message's job is in its own row (``messages.job_*``).

Order is kept per *conversation* (one chat on one sender number): a worker leases a conversation
(``conversations.lease_owner/lease_until``), sends its pending jobs strictly in acceptance order, and
gives the lease back. A job waiting for a retry holds its conversation (the lease is parked until the
retry time), so later messages never overtake it. On PostgreSQL, claims lock conversations with
``FOR UPDATE SKIP LOCKED``, so any number of workers can share the queue; on SQLite one process owns it.

A job whose attempt has started carries ``job_lease_owner``: if the worker dies mid-send, the next claim
sees that marker and asks the transport whether the job's ``transport_ref`` (the message's id) already went
out before sending it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, case, select, update

from openbloo.chats import store
from openbloo.db import models as m
from openbloo.db.batch import Batch, UnitWithLookups
from openbloo.db.direct import Prepared
from openbloo.delivery.state import StateLookup, advance, apply_update, load_state
from openbloo.errors import ApiError
from openbloo.transports.base import Outgoing, Receipt

_c, _msg, _chat, _num, _grp = m.conversations, m.messages, m.chats, m.numbers, m.groups


# The per-job statements, built once (they run several times per delivered message).
_RENEW_LEASE = (
    update(_c)
    .where(_c.c.id == bindparam("b_conv"), _c.c.lease_owner == bindparam("b_worker"))
    .values(lease_until=bindparam("b_until"))
)
# ``job_updated_at`` of a job marked in flight stays the start of the attempt whose outcome is unknown: a device
# search for it (find_sent) starts there.
ATTEMPT_STARTED = {
    "job_lease_owner": bindparam("b_worker"),
    "job_attempts": _msg.c.job_attempts + 1,
    "job_updated_at": case((_msg.c.job_lease_owner.is_(None), bindparam("b_now")), else_=_msg.c.job_updated_at),
}
_START_ATTEMPT = update(_msg).where(_msg.c.seq == bindparam("b_seq"), m.JOB_IS_PENDING).values(ATTEMPT_STARTED)
_JOB_DONE = (
    update(_msg)
    .where(_msg.c.seq == bindparam("b_seq"))
    .values(job_state="done", job_lease_owner=None, job_last_error=None, job_updated_at=bindparam("b_now"))
)
_RELEASE = (
    update(_c)
    .where(_c.c.id == bindparam("b_conv"), _c.c.lease_owner == bindparam("b_worker"))
    .values(lease_owner=None, lease_until=None)
)

_JOB_DONE_ROWS = Prepared(_JOB_DONE, ("b_seq", "b_now"))
_RELEASE_ROWS = Prepared(_RELEASE, ("b_conv", "b_worker"))


@dataclass(slots=True)
class Job:  # a value, made per delivered message: not frozen for speed (transports/base.py)
    seq: int
    conversation_id: str
    number_id: str
    transport: str
    attempts: int
    next_attempt_at: int
    in_flight: bool  # an earlier attempt started and its outcome is unknown (crash mid-send)
    outgoing: Outgoing


def recipients(chat_type: str, chat_key: str, participants_key: str | None) -> tuple[str, ...]:
    if chat_type == "group":
        return tuple(participants_key.split(",")) if participants_key else ()
    return (chat_key,)


def mark_attempt(job: Job, worker: str, now: int, lease_ms: int) -> Callable[[Batch], bool]:
    """Start an attempt: the job is still pending (not cancelled) and this worker still holds its lease."""

    def unit(batch: Batch) -> bool:
        owned = batch.execute(
            _RENEW_LEASE, {"b_conv": job.conversation_id, "b_worker": worker, "b_until": now + lease_ms}
        )
        if not owned:
            return False
        started = batch.execute(_START_ATTEMPT, {"b_seq": job.seq, "b_worker": worker, "b_now": now})
        return bool(started)

    return unit


# What a unit that finished a job also did for its conversation (see :func:`then_next`).
NEXT_STARTED, NEXT_CANCELLED, RELEASED = "next_started", "next_cancelled", "released"


def then_next(
    finish: Callable[[Batch], Any], job: Job, following: Job | None, worker: str, now: int, lease_ms: int
) -> Callable[[Batch], str]:
    """``finish`` (the job's outcome), and in the same unit what the conversation does next.

    If the conversation's ``following`` job is due, its attempt is started (as :func:`mark_attempt` does);
    otherwise the conversation is released (as :func:`release` does). One unit of work per sent message
    instead of three. Returns :data:`NEXT_STARTED`, :data:`NEXT_CANCELLED` (the following job was cancelled
    meanwhile or the lease was lost: the caller goes on with the job after it, as after a failed mark) or
    :data:`RELEASED`.
    """

    def unit(batch: Batch) -> str:
        finish(batch)
        if following is not None and following.next_attempt_at <= now:
            return NEXT_STARTED if mark_attempt(following, worker, now, lease_ms)(batch) else NEXT_CANCELLED
        release([job.conversation_id], worker)(batch)
        return RELEASED

    if isinstance(finish, UnitWithLookups):  # what ``finish`` reads, the batch still reads for all its units
        return UnitWithLookups(unit, finish.lookups)
    return unit


def record_sent(job: Job, receipt: Receipt, now: int) -> UnitWithLookups[None]:
    def unit(batch: Batch) -> None:
        batch.add(_JOB_DONE_ROWS, (job.seq, now))
        state = load_state(batch, message_id=job.outgoing.message_id)
        if state is not None:
            state = advance(
                batch, state, "sent", receipt.sent_at, protocol=receipt.protocol, provider_id=receipt.provider_id
            )
            for update in receipt.updates:  # what the device reported at once (delivered, read)
                state = apply_update(batch, state, update)
        if receipt.chat_guid and not job.outgoing.is_group and receipt.chat_guid != job.outgoing.chat_guid:
            store.learn_device_chat(batch, job.conversation_id, receipt.chat_guid)
        group_id = state.group_id if state is not None else None
        if receipt.chat_guid and job.outgoing.is_group and not job.outgoing.chat_guid and group_id:
            # The first send to a group created its chat on the device: remember it for the next ones. The group
            # is the message's own (found by its chat key, it was a scan of every organization's chats).
            store.learn_group_chat(batch, group_id, receipt.chat_guid)

    return UnitWithLookups(unit, StateLookup(job.outgoing.message_id))


def record_retry(
    job: Job, error: str, retry_at: int, now: int, *, in_flight: str | None = None
) -> Callable[[Batch], None]:
    """The attempt failed transiently: park the job and hold its conversation until ``retry_at``.

    ``in_flight`` (a worker id) keeps the job marked as possibly sent, so the next attempt asks the device
    first; the marker's time (``updated_at``) stays that of the attempt whose outcome is unknown.
    """

    def unit(batch: Batch) -> None:
        values: dict[str, Any] = {
            "job_lease_owner": in_flight,
            "job_next_attempt_at": retry_at,
            "job_last_error": error,
        }
        if in_flight is None:
            values["job_updated_at"] = now
        batch.conn.execute(update(_msg).where(_msg.c.seq == job.seq).values(**values))
        batch.conn.execute(
            update(_c).where(_c.c.id == job.conversation_id).values(lease_owner=None, lease_until=retry_at)
        )

    return unit


def record_failed(job: Job, code: str, error: str, now: int) -> Callable[[Batch], None]:
    def unit(batch: Batch) -> None:
        batch.conn.execute(
            update(_msg)
            .where(_msg.c.seq == job.seq)
            .values(job_state="failed", job_lease_owner=None, job_last_error=error, job_updated_at=now)
        )
        state = load_state(batch, message_id=job.outgoing.message_id)
        if state is not None:
            advance(batch, state, "failed", now, error=error, error_code=code)

    return unit


def release(conversation_ids: list[str], worker: str) -> Callable[[Batch], None]:
    def unit(batch: Batch) -> None:
        for conv_id in conversation_ids:
            batch.add(_RELEASE_ROWS, (conv_id, worker))

    return unit


def sent_messages_to_resume(transport_kinds: tuple[str, ...], limit: int = 10_000) -> Callable[[Batch], Any]:
    """Messages left ``sent`` on transports that can re-arm their receipts (after a restart)."""

    def unit(batch: Batch) -> list[tuple[str, str, Outgoing, Receipt]]:
        rows = batch.conn.execute(
            select(
                _msg.c.id,
                _msg.c.number_id,
                _num.c.transport,
                _msg.c.provider_id,
                _msg.c.protocol,
                _msg.c.time_sent,
                _msg.c.text,
                _msg.c.job_attempts,
                _msg.c.job_updated_at,
                _num.c.phone_number,
                _chat.c.chat_key,
                _chat.c.type.label("chat_type"),
                _grp.c.chat_guid,
                _grp.c.participants_key,
            )
            .join(_num, _num.c.id == _msg.c.number_id)
            .join(_chat, _chat.c.id == _msg.c.chat_id)
            .outerjoin(_grp, _grp.c.id == _chat.c.group_id)
            .where(m.MESSAGE_IS_SENT, _num.c.transport.in_(transport_kinds))
            .limit(limit)
        )
        out = []
        for r in rows:
            outgoing = Outgoing(
                message_id=r.id,
                attempt=r.job_attempts,
                sender=r.phone_number,
                chat_key=r.chat_key,
                recipients=recipients(r.chat_type, r.chat_key, r.participants_key),
                is_group=r.chat_type == "group",
                chat_guid=r.chat_guid,
                text=r.text,
                time_accepted=r.time_sent,
            )
            out.append((r.number_id, r.transport, outgoing, Receipt(r.provider_id, r.protocol, r.job_updated_at)))
        return out

    return unit


def cancel(
    org_id: str, message_id: str, chat_matches: Callable[[str, str | None], bool], now: int
) -> Callable[[Batch], Any]:
    """DECISIONS.md §13: a still-queued message is cancelled; one handed to the transport is 409."""

    def refused(why: str) -> ApiError:
        return ApiError(409, "message_not_cancellable", f"Message {message_id} is {why} and can no longer be cancelled")

    def unit(batch: Batch) -> dict[str, Any]:
        row = batch.conn.execute(
            select(
                _msg.c.status,
                _msg.c.direction,
                _chat.c.chat_key,
                _grp.c.participants_key,
                _msg.c.job_state,
                _msg.c.job_lease_owner,
            )
            .join(_chat, _chat.c.id == _msg.c.chat_id)
            .outerjoin(_grp, _grp.c.id == _chat.c.group_id)
            .where(_msg.c.id == message_id, _msg.c.organization_id == org_id)
        ).first()
        if row is None or not chat_matches(row.chat_key, row.participants_key):
            raise ApiError(404, "not_found", f"Message {message_id} not found in this chat")
        if (
            row.direction != "outbound"
            or row.status != "queued"
            or row.job_state != "pending"
            or row.job_lease_owner is not None
        ):
            raise refused(row.status)
        # Still nobody's, as the UPDATE finds it: a worker's claim that started the job after the read above
        # (PostgreSQL: another process's commit) has handed it to a device, and it is no longer cancellable.
        cancelled = batch.conn.execute(
            update(_msg)
            .where(and_(_msg.c.id == message_id, _msg.c.job_state == "pending", _msg.c.job_lease_owner.is_(None)))
            .values(status="cancelled", job_state="cancelled", job_updated_at=now)
        )
        if cancelled.rowcount != 1:
            raise refused("being sent")
        return {"message_id": message_id, "cancelled": True, "status": "cancelled"}

    return unit
