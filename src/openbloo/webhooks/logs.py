"""Delivery logs and replay (API.md §3.18, §5.6): what was sent to a webhook, what it answered, and a
synchronous re-send of one logged event.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import and_, desc, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.errors import not_found
from openbloo.events.deliveries import AttemptRecord, count_attempts, log_attempt
from openbloo.events.fanout import ORDER_DELIVERIES
from openbloo.events.sender import HttpOutcome, event_body, post_event
from openbloo.ids import new_id
from openbloo.webhooks.urls import Resolver

_a, _d, _ev = m.webhook_attempts, m.webhook_deliveries, m.events
LOG_SCOPES = {"api_key": "api", "organization": "org", "integration": "integration"}


def _json_or_text(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def log_view(row: Any, scope: str, organization_id: str) -> dict[str, Any]:
    body = _json_or_text(row.event_body)
    event = body if isinstance(body, dict) else {}
    return {
        "event_id": row.event_id,
        "scope": LOG_SCOPES.get(scope, scope),
        "attempted_time": row.attempted_at,
        "response_received_at": row.response_received_at,
        "webhook_url": row.webhook_url,
        "event_body": body,
        "response_status": row.response_status,
        "response_json": _json_or_text(row.response_body),
        # Not in the v2 schema (clients ignore unknown fields): why an attempt got no answer at all.
        "error": row.error,
        "metadata": {
            "duration_ms": row.duration_ms,
            "event_name": event.get("event"),
            "is_replay": bool(row.is_replay),
            "message_id": event.get("message_id"),
            "organization_id": organization_id,
            "original_event_id": row.original_event_id,
        },
    }


async def list_logs(
    conn: AsyncConnection,
    webhook: Any,
    *,
    limit: int,
    offset: int,
    sort: str,
    status: int | None,
    min_status: int | None,
    max_status: int | None,
) -> dict[str, Any]:
    where = [_a.c.webhook_id == webhook.id]
    if status is not None:
        where.append(_a.c.response_status == status)
    if min_status is not None:
        where.append(_a.c.response_status >= min_status)
    if max_status is not None:
        where.append(_a.c.response_status <= max_status)
    cond = and_(*where)
    # Counted over the (webhook_id, attempted_at) index: one webhook's attempts, never the whole table.
    total = (await conn.execute(select(func.count()).select_from(_a).where(cond))).scalar_one()
    order = (_a.c.attempted_at, _a.c.seq) if sort == "asc" else (desc(_a.c.attempted_at), desc(_a.c.seq))
    rows = (await conn.execute(select(_a).where(cond).order_by(*order).limit(limit).offset(offset))).all()
    logs = [log_view(r, webhook.scope, webhook.organization_id) for r in rows]
    return {
        "logs": logs,
        "pagination": {
            "limit": limit,
            "offset": offset,
            "total": int(total),
            "returned": len(logs),
            "has_more": offset + len(logs) < int(total),
        },
    }


async def find_logged_event(conn: AsyncConnection, webhook: Any, event_id: str) -> tuple[bytes, str, str | None]:
    """The exact body of an event this webhook was sent (or was to be sent), its type and message id."""
    delivered = (
        await conn.execute(
            select(_ev.c.payload, _ev.c.type, _ev.c.message_id)
            .join(_d, _d.c.event_id == _ev.c.id)
            .where(
                _d.c.webhook_id == webhook.id, _ev.c.id == event_id, _ev.c.organization_id == webhook.organization_id
            )
            .limit(1)
        )
    ).first()
    if delivered is not None:
        return event_body(delivered.payload), delivered.type, delivered.message_id
    # A replay's own id: its log entry holds the body it sent.
    replayed = (
        await conn.execute(
            select(_a.c.event_body).where(_a.c.webhook_id == webhook.id, _a.c.event_id == event_id).limit(1)
        )
    ).first()
    if replayed is None:
        raise not_found(f"Event {event_id} is not in the logs of webhook {webhook.id}", code="event_not_found")
    body = replayed.event_body.encode()
    parsed = _json_or_text(replayed.event_body)
    event = parsed if isinstance(parsed, dict) else {}
    return body, str(event.get("event") or "message"), event.get("message_id")


def record_replay(record: AttemptRecord, organization_id: str) -> Callable[[Batch], None]:
    def unit(batch: Batch) -> None:
        w = m.webhooks
        if batch.conn.execute(select(w.c.id).where(w.c.id == record.webhook_id)).first() is None:
            return  # deleted while the replay was in flight
        batch.insert_later(
            _d,
            {
                "id": record.delivery_id,
                "webhook_id": record.webhook_id,
                "event_id": record.event_id,
                "organization_id": organization_id,
                "state": record.state,
                "attempts": 1,
                "next_attempt_at": record.attempted_at,
                "lease_owner": None,
                "lease_until": None,
                "is_replay": True,
                "original_event_id": record.original_event_id,
                "created_at": record.attempted_at,
            },
            ORDER_DELIVERIES,
        )
        log_attempt(batch, record)
        count_attempts(batch, [record])

    return unit


async def replay(
    client: httpx.AsyncClient,
    resolver: Resolver,
    webhook: Any,
    *,
    body: bytes,
    event_type: str,
    message_id: str | None,
    original_event_id: str,
    timeout: float,
) -> tuple[AttemptRecord, HttpOutcome]:
    replay_id = new_id("evt_", ordered=True)
    outcome = await post_event(
        client,
        resolver,
        url=webhook.url,
        secret=webhook.signing_secret,
        body=body,
        event_type=event_type,
        message_id=message_id,
        event_id=replay_id,
        timeout=timeout,
        original_event_id=original_event_id,
    )
    record = AttemptRecord(
        delivery_id=new_id("dlv_", ordered=True),
        webhook_id=webhook.id,
        event_id=replay_id,
        url=webhook.url,
        body=body.decode(),
        attempted_at=outcome.attempted_at,
        received_at=outcome.received_at,
        status=outcome.status,
        response_body=outcome.body,
        duration_ms=outcome.duration_ms,
        error=outcome.error,
        state="succeeded" if outcome.ok else "failed",
        attempts=1,
        next_attempt_at=None,
        is_replay=True,
        original_event_id=original_event_id,
    )
    return record, outcome


def replay_view(record: AttemptRecord, outcome: HttpOutcome) -> dict[str, Any]:
    return {
        "success": outcome.ok,
        "replay_event_id": record.event_id,
        "original_event_id": record.original_event_id,
        "webhook_id": record.webhook_id,
        "webhook_url": record.url,
        "response_status": outcome.status,
        "duration_ms": outcome.duration_ms,
        "response_data": {
            "body": _json_or_text(outcome.body),
            "headers": outcome.headers,
            "size": outcome.size,
            "contentType": outcome.content_type,
            "duration": outcome.duration_ms,
            "error": outcome.error,
            "errorType": outcome.error_type,
        },
    }
