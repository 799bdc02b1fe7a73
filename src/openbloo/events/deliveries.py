"""Webhook deliveries as units of work: claim the due ones, record each attempt and its outcome.

A delivery is one event for one webhook: ``pending`` until an attempt gets a 2xx (``succeeded``), or
until the retry schedule is spent (``failed``, still replayable); ``skipped`` when its webhook was
deprecated or expired before it went out. Claiming leases deliveries to one sender
(``lease_owner``/``lease_until``; ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so no delivery is attempted
twice at once, and a sender that dies mid-attempt leaves leases that expire and are claimed again
(at-least-once). Every attempt is a ``webhook_attempts`` row: what the delivery logs show.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, or_, select, update

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.db.direct import Prepared
from openbloo.db.inlist import MAX_SIZE as MAX_IN
from openbloo.db.inlist import InList

_d, _ev, _w, _a = m.webhook_deliveries, m.events, m.webhooks, m.webhook_attempts

MAX_RESPONSE_CHARS = 4096


@dataclass(slots=True)
class ClaimedDelivery:
    """A delivery leased to this process's sender: claimed, or pushed to it when its event committed."""

    id: str
    webhook_id: str
    event_id: str
    attempts: int
    event_type: str
    message_id: str | None
    payload: Any
    url: str
    secret: str
    scope: str


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished attempt and what it means for its delivery."""

    delivery_id: str
    webhook_id: str
    event_id: str
    url: str
    body: str
    attempted_at: int
    received_at: int | None
    status: int | None
    response_body: str | None
    duration_ms: int
    error: str | None
    # The delivery afterwards: "succeeded", "failed", or "pending" again with ``next_attempt_at``.
    state: str
    attempts: int
    next_attempt_at: int | None
    is_replay: bool = False
    original_event_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


# The claim's statements, built once (the sender claims on every wake-up, hundreds of times a second under
# load): time, limit and worker are bind parameters, and the IN lists are prebuilt per length
# (openbloo.db.inlist), so every statement runs on the driver cursor instead of being compiled per call.
_FREE = or_(_d.c.lease_until.is_(None), _d.c.lease_until < bindparam("b_now"))
# First the candidates, without their payloads: with a backlog, most due rows are over a webhook's slots and
# are not taken, and parsing their payloads cost more than everything else the sender does.
_CANDIDATES = (
    select(_d.c.seq, _d.c.webhook_id, _w.c.deprecated_at, _w.c.valid_until)
    .join(_w, _w.c.id == _d.c.webhook_id)
    .where(_d.c.state == "pending", _d.c.next_attempt_at <= bindparam("b_now"), _FREE)
    .order_by(_d.c.next_attempt_at, _d.c.seq)
    .limit(bindparam("b_limit"))
)


def _candidates(for_update: bool, full: list[Any] | None = None) -> Any:
    """The candidates query, leaving out the webhooks in ``full`` (no free slot); PostgreSQL locks its rows."""
    stmt = _CANDIDATES if full is None else _CANDIDATES.where(_d.c.webhook_id.not_in(full))
    return stmt.with_for_update(skip_locked=True, of=_d) if for_update else stmt


_CANDIDATES_FOR = {pg: _candidates(pg) for pg in (False, True)}
_CANDIDATES_EXCLUDING = {pg: InList(functools.partial(_candidates, pg), "b_full") for pg in (False, True)}
_CHOSEN = InList(
    lambda seqs: (
        select(
            _d.c.seq,
            _d.c.id,
            _d.c.webhook_id,
            _d.c.event_id,
            _d.c.attempts,
            _ev.c.type,
            _ev.c.message_id,
            _ev.c.payload,
            _w.c.url,
            _w.c.signing_secret,
            _w.c.scope,
        )
        .join(_ev, _ev.c.id == _d.c.event_id)
        .join(_w, _w.c.id == _d.c.webhook_id)
        .where(_d.c.seq.in_(seqs))
    )
)
_LEASE = InList(
    lambda seqs: (
        update(_d).where(_d.c.seq.in_(seqs)).values(lease_owner=bindparam("b_worker"), lease_until=bindparam("b_until"))
    )
)
_SKIP = InList(lambda seqs: update(_d).where(_d.c.seq.in_(seqs)).values(state="skipped", lease_owner=None))


def claim(
    worker: str, now: int, lease_ms: int, limit: int, free_slots: Mapping[str, int], per_webhook: int
) -> Callable[[Batch], list[ClaimedDelivery]]:
    """Lease up to ``limit`` due deliveries, at most ``free_slots.get(webhook, per_webhook)`` per webhook.

    Webhooks with no free slot are left out of the query itself, so a dead receiver's backlog at the head
    of the queue cannot hide other receivers' due deliveries.
    """

    def unit(batch: Batch) -> list[ClaimedDelivery]:
        full = [w for w, n in free_slots.items() if n <= 0]
        params = {"b_now": now, "b_limit": limit * 4}
        taken: dict[str, int] = {}
        picked: list[int] = []
        skipped: list[int] = []
        rows: list[tuple[Any, ...]] = []
        if not full:
            rows = batch.all(_CANDIDATES_FOR[batch.is_postgres], params)
        elif len(full) <= MAX_IN:
            rows = batch.all(*_CANDIDATES_EXCLUDING[batch.is_postgres](full, params))
        else:  # more full webhooks than one prebuilt list holds: built for this call
            rows = batch.all(_candidates(batch.is_postgres, full), params)
        for seq, webhook_id, deprecated_at, valid_until in rows:
            if deprecated_at is not None or (valid_until != -1 and valid_until <= now):
                skipped.append(seq)  # deprecated or expired webhooks get nothing (DECISIONS.md §14)
                continue
            if len(picked) >= limit:
                break
            slots = free_slots.get(webhook_id, per_webhook)
            if taken.get(webhook_id, 0) >= slots:
                continue
            taken[webhook_id] = taken.get(webhook_id, 0) + 1
            picked.append(seq)
        chosen: list[ClaimedDelivery] = []
        chosen_seqs: list[int] = []
        by_seq: dict[int, tuple[Any, ...]] = {}
        for part in InList.chunks(picked):
            for row in batch.all(*_CHOSEN(part)):
                by_seq[row[0]] = row
        for seq in picked:  # in claim order (due time, then acceptance)
            d = by_seq.get(seq)
            if d is not None:
                chosen.append(ClaimedDelivery(*d[1:]))
                chosen_seqs.append(seq)
        for part in InList.chunks(chosen_seqs):
            batch.execute(*_LEASE(part, {"b_worker": worker, "b_until": now + lease_ms}))
        for part in InList.chunks(skipped):
            batch.execute(*_SKIP(part))
        return chosen

    return unit


def unclaim(ids: list[str], worker: str) -> Callable[[Batch], None]:
    """Give back leases this worker holds on deliveries it claimed but did not attempt (a stopping sender)."""

    def unit(batch: Batch) -> None:
        batch.conn.execute(
            update(_d)
            .where(_d.c.id.in_(ids), _d.c.lease_owner == worker, _d.c.state == "pending")
            .values(lease_owner=None, lease_until=None)
        )

    return unit


_SAVE_DELIVERY = (
    update(_d)
    .where(_d.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next"),
        lease_owner=None,
        lease_until=None,
    )
)
_COUNT_ATTEMPT = (
    update(_w)
    .where(_w.c.id == bindparam("b_id"))
    .values(
        failure_count=_w.c.failure_count + bindparam("b_failed"),
        last_triggered=case(
            (or_(_w.c.last_triggered.is_(None), _w.c.last_triggered < bindparam("b_t")), bindparam("b_t")),
            else_=_w.c.last_triggered,
        ),
    )
)


_ATTEMPT_COLUMNS = (
    "delivery_id",
    "webhook_id",
    "event_id",
    "webhook_url",
    "event_body",
    "attempted_at",
    "response_received_at",
    "response_status",
    "response_body",
    "duration_ms",
    "error",
    "is_replay",
    "original_event_id",
)
_ATTEMPT = Prepared.insert(_a, _ATTEMPT_COLUMNS)
_DELIVERY_OUTCOME = Prepared(_SAVE_DELIVERY, ("b_id", "b_state", "b_attempts", "b_next"))
_WEBHOOK_COUNTS = Prepared(_COUNT_ATTEMPT, ("b_id", "b_failed", "b_t"))
_WEBHOOKS_THERE = InList(lambda ids: select(_w.c.id).where(_w.c.id.in_(ids)))


def attempt_row(record: AttemptRecord) -> tuple[Any, ...]:
    """The ``webhook_attempts`` row of an attempt, in :data:`_ATTEMPT_COLUMNS` order."""
    body = record.response_body
    return (
        record.delivery_id,
        record.webhook_id,
        record.event_id,
        record.url,
        record.body,
        record.attempted_at,
        record.received_at,
        record.status,
        body[:MAX_RESPONSE_CHARS] if body is not None else None,
        record.duration_ms,
        record.error,
        record.is_replay,
        record.original_event_id,
    )


def log_attempt(batch: Batch, record: AttemptRecord) -> None:
    """Queue the attempt's log row."""
    batch.add(_ATTEMPT, attempt_row(record), 95)


def count_attempts(batch: Batch, records: list[AttemptRecord]) -> None:
    """``failure_count`` (never reset) and ``last_triggered`` of the attempts' webhooks: one update per webhook."""
    counts: dict[str, list[int]] = {}
    for r in records:
        c = counts.get(r.webhook_id)
        if c is None:
            counts[r.webhook_id] = [0 if r.ok else 1, r.attempted_at]
        else:
            c[0] += 0 if r.ok else 1
            c[1] = max(c[1], r.attempted_at)
    for webhook_id, (failed, at) in counts.items():
        batch.add(_WEBHOOK_COUNTS, (webhook_id, failed, at))


def record_attempts(records: list[AttemptRecord]) -> Callable[[Batch], int]:
    """Log attempts, move their deliveries on, and count them on their webhooks (``failure_count``)."""

    def unit(batch: Batch) -> int:
        ids = sorted({r.webhook_id for r in records})
        existing: set[str] = set()
        for part in InList.chunks(ids):
            existing.update(row[0] for row in batch.all(*_WEBHOOKS_THERE(part)))
        # A webhook deleted while its attempt was in flight has nothing to log the attempt on.
        kept = [r for r in records if r.webhook_id in existing]
        for r in kept:
            log_attempt(batch, r)
            batch.add(_DELIVERY_OUTCOME, (r.delivery_id, r.state, r.attempts, r.next_attempt_at or r.attempted_at))
        count_attempts(batch, kept)
        return len(kept)

    return unit
