"""Recording events: the one place an event row is written, inside the batch that causes it.

Everything that happens to a message (queued, sent, delivered, read, failed, received ...) that a webhook
must receive becomes an event row in the same transaction as the change itself (transactional outbox).
Its webhook deliveries are written in that same transaction too (:func:`openbloo.events.fanout.fan_out`),
so no process that records events (API, worker, CLI) can record one without its deliveries.

An event no webhook receives (none subscribed to its bucket, or none that may see it) is not written, and
its payload is not even built: an event row is only ever read through its deliveries (the sender, the
webhook logs, a replay), so a row without one is never read. Subscriptions apply to what happens after
they are made (a new webhook is not sent the past), so nothing a webhook could later ask for is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.db.direct import Prepared
from openbloo.events.fanout import fan_out, receivers
from openbloo.ids import new_id

# Flush order: after messages (60) and jobs (70), before deliveries (85) and idempotency records (90).
ORDER_EVENTS = 80


class Event(NamedTuple):
    """An event row, its fields in the order of the INSERT below (the tuple is the row)."""

    id: str
    organization_id: str
    type: str
    message_id: str | None
    api_key_id: str | None
    number_id: str | None
    payload: dict[str, Any]
    created_at: int


_EVENT = Prepared.insert(m.events, Event._fields)


def record_event(
    batch: Batch,
    *,
    organization_id: str,
    type: str,
    payload: Callable[[], dict[str, Any]],
    created_at: int,
    message_id: str | None = None,
    api_key_id: str | None = None,
    number_id: str | None = None,
) -> Event | None:
    """Record an event and queue its webhook deliveries; None (and nothing written) if no webhook receives
    it. ``payload`` builds the event's payload, called only for an event that is written."""
    subs = receivers(batch, organization_id, type, created_at, api_key_id, number_id)
    if not subs:
        return None
    event = Event(
        new_id("evt_", ordered=True), organization_id, type, message_id, api_key_id, number_id, payload(), created_at
    )
    batch.add(_EVENT, event, ORDER_EVENTS)
    fan_out(batch, event, subs)
    return event
