"""Recording events: the one place an event row is written, inside the batch that causes it.

Everything that happens to a message (queued, sent, delivered, read, failed, received ...) becomes an
event row in the same transaction as the change itself (transactional outbox). Its webhook deliveries
are written in that same transaction too (:func:`openbloo.events.fanout.fan_out`), so no process that
records events (API, worker, CLI) can record one without its deliveries.
"""

from __future__ import annotations

from typing import Any

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.events.fanout import fan_out
from openbloo.ids import new_id

# Flush order: after messages (60) and jobs (70), before deliveries (85) and idempotency records (90).
ORDER_EVENTS = 80


def record_event(
    batch: Batch,
    *,
    organization_id: str,
    type: str,
    payload: dict[str, Any],
    created_at: int,
    message_id: str | None = None,
    api_key_id: str | None = None,
    number_id: str | None = None,
) -> dict[str, Any]:
    row = {
        "id": new_id("evt_", ordered=True),
        "organization_id": organization_id,
        "type": type,
        "message_id": message_id,
        "api_key_id": api_key_id,
        "number_id": number_id,
        "payload": payload,
        "created_at": created_at,
    }
    batch.insert_later(m.events, row, ORDER_EVENTS)
    fan_out(batch, row)
    return row
