"""The claim: find conversations with due jobs, lease them to a worker, and read their pending jobs (a job is
its message's row, ``messages.job_*``).

A claim leases whole conversations (one chat on one sender number), so their jobs go out in acceptance
order (:mod:`openbloo.delivery.jobs`). On PostgreSQL it locks them with ``FOR NO KEY UPDATE SKIP LOCKED``,
so any number of workers can share the queue; on SQLite one process owns it. It also starts the first due job of
each conversation, so the dispatcher hands that job to its device without a unit of work of its own first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, any_, bindparam, case, cast, func, or_, select, true, update
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by

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
    # Its claim may have left pending jobs out (``per_conversation``, or past the claim's window): once these are
    # sent, it is claimed again.
    truncated: bool = False


# The claim's statements, built once: the dispatcher claims many times per second under load, and statements
# built per call (per-call literals, expanding IN lists) cost SQLAlchemy's whole compile path each time.
def _free(conv: Any) -> Any:
    """The conversation (``conv``: the table or an alias of it) is held by no worker, or its lease ran out."""
    return or_(conv.c.lease_until.is_(None), conv.c.lease_until < bindparam("b_now"))


def _window(conv: Any) -> Any:
    """The oldest pending jobs of the conversations nobody holds, ``b_scan`` of them in acceptance order: seq,
    conversation, due time.

    In acceptance order, a conversation's jobs in the window are the first of its pending jobs, the first one
    its next (whatever came before it is final): the claim reads them through the one index of pending jobs
    by seq, which takes its entries at the end. An index by conversation, to read a conversation's jobs
    apart, cost every send an entry at a random page (docs/benchmarks.md, change 66). A job waiting for its
    retry keeps its conversation held until then, so a free conversation's jobs are due.
    """
    return (
        select(_msg.c.seq, _msg.c.conversation_id, _msg.c.job_next_attempt_at)
        .join(conv, conv.c.id == _msg.c.conversation_id)
        .where(m.JOB_IS_PENDING, _free(conv))
        .order_by(_msg.c.seq)
        .limit(bindparam("b_scan"))
    )


_FREE = _free(_c)


# A job's columns, as the claim hands them to the dispatcher (:func:`_jobs_of`): the message's job and content,
# its sender number, chat, group and conversation.
_JOB_COLUMNS = (
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
_REPLY_TO = 12  # the position of messages.reply_to in _JOB_COLUMNS


def _pending_jobs() -> Any:
    """Pending jobs with their columns (``_JOB_COLUMNS``); the caller adds which ones."""
    return (
        select(*_JOB_COLUMNS)
        .join(_num, _num.c.id == _msg.c.number_id)
        .join(_chat, _chat.c.id == _msg.c.chat_id)
        .join(_c, _c.c.id == _msg.c.conversation_id)
        .outerjoin(_grp, _grp.c.id == _chat.c.group_id)
        .where(m.JOB_IS_PENDING)
    )


def _due_conversations(window: Any, *, with_jobs: bool = False) -> Any:
    """The free conversations whose next job is due, ``b_limit`` of them (oldest next job first), each with its
    first and last job in ``window`` (:func:`_window`); ``with_jobs`` (PostgreSQL): the seqs of all its jobs
    in the window too, in order, instead of the last.

    The rule is written once, in SQL, for both stores: SQLite reads them and leases them with a second
    statement (one process owns its queue; a statement there is a call, not a round trip), PostgreSQL finds,
    locks and leases them inside its one claim statement (:func:`_claim_in_one_statement`).
    """
    first_seq = func.min(window.c.seq)
    jobs = (
        func.array_agg(aggregate_order_by(window.c.seq, window.c.seq)).label("seqs")
        if with_jobs
        else func.max(window.c.seq).label("last_seq")
    )
    heads = (
        select(window.c.conversation_id, first_seq.label("first_seq"), jobs)
        .group_by(window.c.conversation_id)
        # Its first job is due (the earliest due job is its first job).
        .having(first_seq == func.min(case((window.c.job_next_attempt_at <= bindparam("b_now"), window.c.seq))))
        .subquery("heads")
    )
    return (
        select(_c.c.id, heads.c.first_seq, heads.c[jobs.name])
        .join(heads, heads.c.conversation_id == _c.c.id)
        .where(_FREE)
        .order_by(heads.c.first_seq)
        .limit(bindparam("b_limit"))
    )


def _scanned(window: Any) -> Any:
    """How many jobs ``window`` holds: a full window may have left later jobs out."""
    return select(func.count()).select_from(window).scalar_subquery()


def _seqs(aggregate: Any) -> Any:
    """A select of one array of seqs as a value to compare with ``= ANY``: cast, so that PostgreSQL takes it as
    one array and not as a subquery of rows."""
    return cast(aggregate.scalar_subquery(), ARRAY(BigInteger))


def _claim_in_one_statement() -> Any:
    """PostgreSQL's whole claim, one statement: find, lock and lease the due conversations, start the first job
    of each and read all their jobs; one row per job (``_JOB_COLUMNS``), then the window's size and whether
    this claim started it.

    Other workers may be claiming the same conversations right now: ``FOR NO KEY UPDATE SKIP LOCKED`` takes
    only those nobody holds, and the free test runs again on the locked rows. ``FOR NO KEY UPDATE``, not
    ``FOR UPDATE``: a message's row refers to its conversation, so storing one takes a key-share lock on it,
    which ``FOR UPDATE`` blocks (a send to a conversation being claimed waited for the claim's COMMIT); the
    lease changes no key. Every part reads one snapshot, so a leased conversation's pending jobs up to the
    window's end are its jobs in the window, and its first is the one started; the jobs are read as they were
    before that start (the dispatcher asks the device first about a job that was already in flight).

    Every row is reached by key, whatever the planner believes of the tables: the jobs and the first jobs as
    arrays of seqs (``= ANY``), never by a join of the window with the leased conversations, which a plan made
    while the tables were small ran once per conversation (0.9 s a claim on a backlog). Two round trips with
    the COMMIT where the claim's own statements took four (docs/benchmarks.md, change 70).
    """
    window = _window(_c.alias("held")).cte("job_window")
    locked = _due_conversations(window, with_jobs=True).with_for_update(of=_c, skip_locked=True, key_share=True)
    locked_due = locked.subquery("locked")
    leased = (
        update(_c)
        .where(_c.c.id == locked_due.c.id)
        .values(lease_owner=bindparam("b_worker"), lease_until=bindparam("b_until"))
        .returning(locked_due.c.first_seq, locked_due.c.seqs, _scanned(window).label("scanned"))
        .cte("leased")
    )
    firsts = _seqs(select(func.array_agg(leased.c.first_seq)))
    started = (
        update(_msg)
        .where(_msg.c.seq == any_(firsts), m.JOB_IS_PENDING)
        .values(ATTEMPT_STARTED)
        .returning(_msg.c.seq)
        .cte("started")
    )
    each = func.unnest(leased.c.seqs).table_valued("seq").render_derived(name="each")
    jobs = _seqs(select(func.array_agg(each.c.seq)).select_from(leased).join(each, true()))
    return (
        _pending_jobs()
        .add_columns(
            select(leased.c.scanned).limit(1).scalar_subquery(),
            _msg.c.seq == any_(_seqs(select(func.array_agg(started.c.seq)))),
        )
        .where(_msg.c.seq == any_(jobs))
        .order_by(_msg.c.seq)
    )


def _due_with_window_size() -> Any:
    """SQLite's find: the due conversations (:func:`_due_conversations`), each row with the window's size."""
    window = _window(_c.alias("held")).cte("job_window")
    return _due_conversations(window).add_columns(_scanned(window))


_CLAIM_PG = _claim_in_one_statement()
_DUE = _due_with_window_size()
# SQLite: the due conversations found are leased with a statement of their own (PostgreSQL's claim leases them).
_LEASE = InList(
    lambda ids: (
        update(_c).where(_c.c.id.in_(ids)).values(lease_owner=bindparam("b_worker"), lease_until=bindparam("b_until"))
    )
)
# SQLite: the pending jobs of leased conversations up to the window's last (``b_upto``): a walk of the index of
# pending jobs by seq from its start, as long as the window's (and the jobs of held conversations among them).
_PENDING_JOBS = InList(
    lambda ids: (
        _pending_jobs().where(_msg.c.seq <= bindparam("b_upto"), _msg.c.conversation_id.in_(ids)).order_by(_msg.c.seq)
    )
)
# SQLite: the claim starts the first due job of each conversation itself, as mark_attempt would right after it:
# the in-flight marker is committed before the hand-off either way, with one unit of work fewer.
_START_HEADS = InList(
    lambda seqs: (
        update(_msg).where(_msg.c.seq.in_(seqs), m.JOB_IS_PENDING).values(ATTEMPT_STARTED).returning(_msg.c.seq)
    )
)
_PROVIDER_IDS = InList(
    lambda ids: select(_msg.c.id, _msg.c.provider_id).where(_msg.c.id.in_(ids), _msg.c.provider_id.is_not(None))
)


def claim(worker: str, now: int, lease_ms: int, limit: int, per_conversation: int = 100) -> Callable[[Batch], Any]:
    limit = max(1, min(limit, MAX_IN))

    def unit(batch: Batch) -> list[ClaimedConversation]:
        scan = limit * 4
        params = {"b_now": now, "b_scan": scan, "b_limit": limit, "b_worker": worker, "b_until": now + lease_ms}
        if batch.is_postgres:
            rows = batch.all(_CLAIM_PG, params)
            if not rows:
                return []
            job_rows = [r[:-2] for r in rows]
            conv_ids = list(dict.fromkeys(r[1] for r in rows))
            window_full = rows[0][-2] >= scan
            started = {r[0] for r in rows if r[-1]}
        else:  # one process owns a SQLite file's queue, and its statements are calls, not round trips
            leased = batch.all(_DUE, params)
            if not leased:
                return []
            conv_ids = [conv_id for conv_id, _, _, _ in leased]
            batch.execute(*_LEASE(conv_ids, params))
            window_full = leased[0][3] >= scan
            job_rows = batch.all(*_PENDING_JOBS(conv_ids, {"b_upto": max(last for _, _, last, _ in leased)}))
        # A full window may have left a conversation's later jobs out: it is claimed again once these are sent.
        truncated: set[str] = set(conv_ids) if window_full else set()
        grouped = _jobs_of(batch, conv_ids, job_rows, per_conversation, truncated)
        if not batch.is_postgres:
            heads = [jobs[0].seq for jobs in grouped.values() if jobs and jobs[0].next_attempt_at <= now]
            started = set()
            if heads:
                started = {r[0] for r in batch.all(*_START_HEADS(heads, {"b_worker": worker, "b_now": now}))}
        claimed = []
        for cid, jobs in grouped.items():
            if jobs and jobs[0].seq not in started and jobs[0].next_attempt_at <= now:
                jobs = jobs[1:]  # cancelled since it was read (another process's cancel committed meanwhile)
            claimed.append(
                ClaimedConversation(cid, tuple(jobs), bool(jobs) and jobs[0].seq in started, cid in truncated)
            )
        return claimed

    return unit


def _jobs_of(
    batch: Batch, conv_ids: list[str], rows: list[Any], per_conversation: int, truncated: set[str]
) -> dict[str, list[Job]]:
    """The claimed conversations' jobs, in acceptance order, from rows of ``_JOB_COLUMNS``; a conversation with
    more than ``per_conversation`` is cut there and marked ``truncated``."""
    parents = _reply_guids(batch, [r[_REPLY_TO] for r in rows])
    grouped: dict[str, list[Job]] = {cid: [] for cid in conv_ids}
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
    return grouped


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
