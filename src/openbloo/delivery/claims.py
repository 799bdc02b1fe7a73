"""The claim: find conversations with due jobs, lease them to a worker, and read their pending jobs (a job is
its message's row, ``messages.job_*``).

A claim leases whole conversations (one chat on one sender number), so their jobs go out in acceptance
order (:mod:`openbloo.delivery.jobs`). On PostgreSQL it locks them with ``FOR UPDATE SKIP LOCKED``, so any
number of workers can share the queue; on SQLite one process owns it. It also starts the first due job of
each conversation, so the dispatcher hands that job to its device without a unit of work of its own first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.db.inlist import MAX_SIZE as MAX_IN
from openbloo.db.inlist import InList
from openbloo.delivery.jobs import ATTEMPT_STARTED, Job, recipients
from openbloo.transports.base import Outgoing

_c, _msg, _chat, _num, _grp = m.conversations, m.messages, m.chats, m.numbers, m.groups


@dataclass(slots=True)
class ClaimedConversation:  # a value, made per delivered message: not frozen for speed (transports/base.py)
    id: str
    jobs: tuple[Job, ...]
    # The claim already started the first job's attempt (its in-flight marker committed with the claim), so
    # the dispatcher hands it to the transport without a unit of its own first.
    head_started: bool = False
    # Its claim left pending jobs out (``per_conversation``): once these are sent, it is claimed again.
    truncated: bool = False


# The claim's statements, built once: the dispatcher claims many times per second under load, and statements
# built per call (per-call literals, expanding IN lists) cost SQLAlchemy's whole compile path each time.
def _free(conv: Any) -> Any:
    """The conversation (``conv``: the table or an alias of it) is held by no worker, or its lease ran out."""
    return or_(conv.c.lease_until.is_(None), conv.c.lease_until < bindparam("b_now"))


def _due_jobs(conv: Any) -> Any:
    """The oldest due jobs of conversations nobody holds (``b_scan`` of them): conversation, due time, seq."""
    return (
        select(_msg.c.conversation_id, _msg.c.job_next_attempt_at, _msg.c.seq)
        .join(conv, conv.c.id == _msg.c.conversation_id)
        .where(m.JOB_IS_PENDING, _msg.c.job_next_attempt_at <= bindparam("b_now"), _free(conv))
        .order_by(_msg.c.job_next_attempt_at, _msg.c.seq)
        .limit(bindparam("b_scan"))
    )


_FREE = _free(_c)
_DUE = _due_jobs(_c)
_LEASE = InList(
    lambda ids: (
        update(_c).where(_c.c.id.in_(ids)).values(lease_owner=bindparam("b_worker"), lease_until=bindparam("b_until"))
    )
)


def _lease_due_conversations() -> Any:
    """PostgreSQL: find, lock and lease the conversations of the oldest due jobs in one statement.

    Other workers may be claiming the same conversations right now: ``FOR UPDATE SKIP LOCKED`` takes only
    those nobody holds, and the free test runs again on the locked rows. One statement instead of three
    (find, lock, lease): every statement is a round trip, and the claim is the step between a message's
    acceptance and its hand-off to the device.
    """
    due_jobs = _due_jobs(_c.alias("held")).subquery("due_jobs")
    due = (
        select(
            due_jobs.c.conversation_id,
            func.min(due_jobs.c.job_next_attempt_at).label("due_at"),
            func.min(due_jobs.c.seq).label("first_seq"),
        )
        .group_by(due_jobs.c.conversation_id)
        .subquery("due")
    )
    lockable = (
        select(_c.c.id)
        .join(due, due.c.conversation_id == _c.c.id)
        .where(_FREE)
        .order_by(due.c.due_at, due.c.first_seq)
        .limit(bindparam("b_limit"))
        .with_for_update(of=_c, skip_locked=True)
    )
    return (
        update(_c)
        .where(_c.c.id.in_(lockable.scalar_subquery()))
        .values(lease_owner=bindparam("b_worker"), lease_until=bindparam("b_until"))
        .returning(_c.c.id)
    )


_LEASE_DUE = _lease_due_conversations()
_PENDING_JOBS = InList(
    lambda ids: (
        select(
            _msg.c.seq,
            _msg.c.conversation_id,
            _msg.c.number_id,
            _msg.c.job_attempts,
            _msg.c.job_next_attempt_at,
            _msg.c.job_lease_owner,
            _msg.c.job_updated_at,
            _msg.c.id,
            _msg.c.text,
            _msg.c.attachments,
            _msg.c.parts,
            _msg.c.effect,
            _msg.c.reply_to,
            _msg.c.link_preview,
            _msg.c.options,
            _msg.c.time_sent,
            _num.c.phone_number,
            _num.c.transport,
            _chat.c.chat_key,
            _chat.c.type,
            _grp.c.chat_guid,
            _grp.c.participants_key,
            _c.c.device_chat_guid,
        )
        .join(_num, _num.c.id == _msg.c.number_id)
        .join(_chat, _chat.c.id == _msg.c.chat_id)
        .join(_c, _c.c.id == _msg.c.conversation_id)
        .outerjoin(_grp, _grp.c.id == _chat.c.group_id)
        .where(_msg.c.conversation_id.in_(ids), m.JOB_IS_PENDING)
        .order_by(_msg.c.seq)
    )
)
# The claim starts the first due job of each conversation itself, as mark_attempt would right after it:
# the in-flight marker is committed before the hand-off either way, with one unit of work fewer.
_START_HEADS = InList(
    lambda seqs: (
        update(_msg).where(_msg.c.seq.in_(seqs), m.JOB_IS_PENDING).values(ATTEMPT_STARTED).returning(_msg.c.seq)
    )
)
_REPLY_TO = 12  # the position of messages.reply_to in _PENDING_JOBS's rows
_PROVIDER_IDS = InList(
    lambda ids: select(_msg.c.id, _msg.c.provider_id).where(_msg.c.id.in_(ids), _msg.c.provider_id.is_not(None))
)


def claim(worker: str, now: int, lease_ms: int, limit: int, per_conversation: int = 100) -> Callable[[Batch], Any]:
    limit = max(1, min(limit, MAX_IN))

    def unit(batch: Batch) -> list[ClaimedConversation]:
        lease = {"b_now": now, "b_scan": limit * 4, "b_limit": limit, "b_worker": worker, "b_until": now + lease_ms}
        if batch.is_postgres:
            conv_ids = [r[0] for r in batch.all(_LEASE_DUE, lease)]
        else:  # one process owns a SQLite file's queue, and its statements are calls, not round trips
            conv_ids = list(dict.fromkeys(r[0] for r in batch.all(_DUE, lease)))[:limit]
            if conv_ids:
                batch.execute(*_LEASE(conv_ids, lease))
        if not conv_ids:
            return []
        rows = batch.all(*_PENDING_JOBS(conv_ids))
        parents = _reply_guids(batch, [r[_REPLY_TO] for r in rows])
        grouped: dict[str, list[Job]] = {cid: [] for cid in conv_ids}
        truncated: set[str] = set()
        for (
            seq,
            conv_id,
            number_id,
            attempts,
            next_attempt_at,
            lease_owner,
            updated_at,
            message_id,
            text,
            attachments,
            parts,
            effect,
            reply_to,
            link_preview,
            options,
            time_sent,
            phone_number,
            transport,
            chat_key,
            chat_type,
            group_chat_guid,
            participants_key,
            device_chat_guid,
        ) in rows:
            jobs = grouped[conv_id]
            if len(jobs) >= per_conversation:
                truncated.add(conv_id)
                continue
            outgoing = Outgoing(
                message_id=message_id,
                transport_ref=message_id,
                attempt=attempts + 1,
                sender=phone_number,
                chat_key=chat_key,
                recipients=recipients(chat_type, chat_key, participants_key),
                is_group=chat_type == "group",
                chat_guid=group_chat_guid or device_chat_guid,
                text=text,
                attachments=tuple(attachments or ()),
                parts=tuple(parts or ()),
                effect=effect,
                reply_to=_resolved_reply(reply_to, parents),
                link_preview=link_preview,
                options=options or {},
                time_accepted=time_sent,
                in_flight_since=updated_at if lease_owner is not None else None,
            )
            jobs.append(
                Job(seq, conv_id, number_id, transport, attempts, next_attempt_at, lease_owner is not None, outgoing)
            )
        heads = [jobs[0].seq for jobs in grouped.values() if jobs and jobs[0].next_attempt_at <= now]
        started: set[int] = set()
        if heads:
            started = {r[0] for r in batch.all(*_START_HEADS(heads, {"b_worker": worker, "b_now": now}))}
        claimed = []
        for cid, jobs in grouped.items():
            if jobs and jobs[0].seq in heads and jobs[0].seq not in started:
                jobs = jobs[1:]  # cancelled since it was read (PostgreSQL: another process's cancel committed)
            claimed.append(
                ClaimedConversation(cid, tuple(jobs), bool(jobs) and jobs[0].seq in started, cid in truncated)
            )
        return claimed

    return unit


def _reply_guids(batch: Batch, replies: list[dict[str, Any] | None]) -> dict[str, str]:
    """Device ids of reply parents that had none when the reply was accepted (they were still queued then)."""
    wanted = list(
        dict.fromkeys(
            reply_to["message_id"]
            for reply_to in replies
            if reply_to and reply_to.get("message_id") and not reply_to.get("guid")
        )
    )
    found: dict[str, str] = {}
    for chunk in InList.chunks(wanted):
        found.update(batch.all(*_PROVIDER_IDS(chunk)))
    return found


def _resolved_reply(reply_to: dict[str, Any] | None, parents: dict[str, str]) -> dict[str, Any] | None:
    if not reply_to or reply_to.get("guid") or reply_to.get("message_id") not in parents:
        return reply_to
    return {**reply_to, "guid": parents[reply_to["message_id"]]}
