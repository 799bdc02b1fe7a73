"""Event → webhook deliveries, in the transaction that records the event (transactional outbox).

Each recorded event is matched against its organization's webhooks: active (not deprecated, not
expired), subscribed to the event's bucket (``webhook_type``, DECISIONS.md §14) and allowed to see it by
``scope``: an ``organization`` webhook sees every event of the organization; an ``api_key`` webhook sees
the events of messages its key sent and the inbound traffic of numbers its key may use. One pending
delivery row per match is queued on the same batch, so an event and its deliveries commit together, and
a delivery can never be lost between the two.

The organization's subscriptions are read once per batch, not once per event: a batch of hundreds of
sends costs one small indexed query.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import bindparam, select

from openbloo.db import models as m
from openbloo.db import wakeups
from openbloo.db.batch import Batch
from openbloo.db.direct import Prepared
from openbloo.events.deliveries import ClaimedDelivery
from openbloo.ids import new_id

if TYPE_CHECKING:
    from openbloo.events.store import Event

# Flush order: after events (80), before idempotency records (90).
ORDER_DELIVERIES = 85

STATUS_EVENTS = frozenset({"message.queued", "message.sent", "message.delivered", "message.failed", "message.read"})
MESSAGE_EVENTS = frozenset({"message.received", "message.reaction"})
WEBHOOK_TYPES = ("message", "status", "poll", "all")
SCOPES = ("api_key", "organization")


def subscribes(webhook_type: str, event_type: str) -> bool:
    """Whether a ``webhook_type`` bucket includes ``event_type``."""
    if webhook_type == "all":
        return True
    if webhook_type == "message":
        return event_type in MESSAGE_EVENTS
    if webhook_type == "status":
        return event_type in STATUS_EVENTS
    if webhook_type == "poll":
        return event_type.startswith("poll.")
    return False


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    webhook_type: str
    scope: str
    api_key_id: str | None
    valid_until: int
    url: str
    secret: str

    def active_at(self, at: int) -> bool:
        return self.valid_until == -1 or self.valid_until > at


_w = m.webhooks
_SUBSCRIPTIONS = select(
    _w.c.id, _w.c.webhook_type, _w.c.scope, _w.c.api_key_id, _w.c.valid_until, _w.c.url, _w.c.signing_secret
).where(_w.c.organization_id == bindparam("org"), _w.c.deprecated_at.is_(None))
_n, _nk = m.numbers, m.number_api_keys
_RESTRICTED = (
    select(_nk.c.number_id, _nk.c.api_key_id)
    .join(_n, _n.c.id == _nk.c.number_id)
    .where(_n.c.organization_id == bindparam("org"))
)


def subscriptions_key(org_id: str) -> tuple[str, str]:
    """The batch-cache key of an organization's subscriptions; webhook changes reset it in their batch."""
    return ("webhook_subscriptions", org_id)


def subscriptions_query(org_id: str) -> tuple[Any, dict[str, Any]]:
    """The read of an organization's subscriptions, for a batch's lookups (:meth:`Batch.all_many`)."""
    return _SUBSCRIPTIONS, {"org": org_id}


def remember_subscriptions(batch: Batch, org_id: str, rows: list[tuple[Any, ...]]) -> tuple[Subscription, ...]:
    """What :func:`subscriptions_query` read, kept for the batch's events."""
    found = tuple(
        Subscription(i, kind, scope, key_id, int(until), url, secret)
        for i, kind, scope, key_id, until, url, secret in rows
    )
    batch.remember(subscriptions_key(org_id), found)
    return found


def _subscriptions(batch: Batch, org_id: str) -> tuple[Subscription, ...]:
    cached = batch.recall(subscriptions_key(org_id))
    if cached is None:
        cached = remember_subscriptions(batch, org_id, batch.all(*subscriptions_query(org_id)))
    return cached


def _restricted_numbers(batch: Batch, org_id: str) -> dict[str, frozenset[str]]:
    """number id → the keys it is restricted to (numbers absent here are usable by every key)."""
    key = ("restricted_numbers", org_id)
    cached = batch.recall(key)
    if cached is None:
        found: dict[str, set[str]] = {}
        for number_id, api_key_id in batch.all(_RESTRICTED, {"org": org_id}):
            found.setdefault(number_id, set()).add(api_key_id)
        cached = {k: frozenset(v) for k, v in found.items()}
        batch.remember(key, cached)
    return cached


def _key_sees(batch: Batch, sub: Subscription, org_id: str, api_key_id: str | None, number_id: str | None) -> bool:
    if api_key_id is not None:
        return bool(api_key_id == sub.api_key_id)
    if number_id is None or sub.api_key_id is None:
        return False
    allowed = _restricted_numbers(batch, org_id).get(number_id)
    return allowed is None or sub.api_key_id in allowed


# Process-local wake-ups for the webhook sender (it also polls, for deliveries written by other processes).
_listeners: list[Callable[[], None]] = []


def add_listener(fn: Callable[[], None]) -> None:
    if fn not in _listeners:
        _listeners.append(fn)


def remove_listener(fn: Callable[[], None]) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def _notify() -> None:
    for fn in list(_listeners):
        fn()


class LocalSender(Protocol):
    """The webhook sender of this process, which new deliveries are pushed to when their event commits."""

    worker_id: str
    lease_ms: int

    def has_room(self, webhook_id: str) -> bool:
        """Whether the webhook's window has room (asked in the writer thread)."""

    def adopt_threadsafe(self, delivery: ClaimedDelivery) -> None:
        """Take a committed delivery leased to it (called in the writer thread, after the commit)."""


_local: LocalSender | None = None


def set_local_sender(sender: LocalSender | None) -> None:
    """Push new deliveries to ``sender`` (this process runs the webhook sender), or stop pushing (None).

    A pushed delivery is inserted already leased to that sender and handed to it after the commit: it skips
    the claim (a writer unit scanning the due rows, one per sender wake-up). Deliveries over a webhook's
    window, or written by a process without a sender, wait for a claim as before.
    """
    global _local
    _local = sender


_DELIVERY_COLUMNS = (
    "id",
    "webhook_id",
    "event_id",
    "organization_id",
    "state",
    "attempts",
    "next_attempt_at",
    "is_replay",
    "created_at",
)
_DELIVERY = Prepared.insert(m.webhook_deliveries, _DELIVERY_COLUMNS)
_LEASED_DELIVERY = Prepared.insert(m.webhook_deliveries, (*_DELIVERY_COLUMNS, "lease_owner", "lease_until"))


def receivers(
    batch: Batch, org_id: str, event_type: str, at: int, api_key_id: str | None, number_id: str | None
) -> list[Subscription]:
    """The webhooks that must receive an event of ``event_type`` (of the key ``api_key_id``, on the number
    ``number_id``) recorded at ``at``: active, subscribed to its bucket, and allowed to see it by scope."""
    subs = _subscriptions(batch, org_id)
    if not subs:
        return []
    return [
        sub
        for sub in subs
        if sub.active_at(at)
        and subscribes(sub.webhook_type, event_type)
        and (sub.scope != "api_key" or _key_sees(batch, sub, org_id, api_key_id, number_id))
    ]


def fan_out(batch: Batch, event: Event, subs: list[Subscription]) -> None:
    """Queue one delivery of ``event`` per webhook of ``subs`` (what :func:`receivers` chose for it)."""
    at = event.created_at
    unleased = 0
    local = _local
    for sub in subs:
        delivery = (new_id("dlv_", ordered=True), sub.id, event.id, event.organization_id, "pending", 0, at, False, at)
        if local is not None and local.has_room(sub.id):
            batch.add(_LEASED_DELIVERY, (*delivery, local.worker_id, at + local.lease_ms), ORDER_DELIVERIES)
            pushed = ClaimedDelivery(
                delivery[0],
                sub.id,
                event.id,
                0,
                event.type,
                event.message_id,
                event.payload,
                sub.url,
                sub.secret,
                sub.scope,
            )
            batch.after_commit(functools.partial(local.adopt_threadsafe, pushed))
        else:
            batch.add(_DELIVERY, delivery, ORDER_DELIVERIES)
            unleased += 1
    # Senders claim what nobody holds: wake them (here and in other processes) only for that.
    if unleased:
        batch.signal(wakeups.WEBHOOKS)
        if not batch.recall("webhook_wakeup"):
            batch.remember("webhook_wakeup", True)
            batch.after_commit(_notify)
