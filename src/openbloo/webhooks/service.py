"""Webhook subscriptions: the rules of create, update, delete and secret rotation (units of work), and the
reads behind ``GET /webhooks`` (API.md §3.17, §5.5; DECISIONS.md §14).

Every change resets the batch's cached subscriptions of the organization (:mod:`openbloo.events.fanout`),
so an event recorded later in the same batch already sees it; events in later batches read it afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.errors import ApiError, bad_request, not_found
from openbloo.events.fanout import subscriptions_key
from openbloo.events.signing import new_secret
from openbloo.ids import new_id

MAX_WEBHOOKS_PER_ORGANIZATION = 64
NEVER = -1

_w, _k = m.webhooks, m.api_keys


def webhook_view(row: Any) -> dict[str, Any]:
    return {
        "webhook_id": row.id,
        "webhook_url": row.url,
        "webhook_type": row.webhook_type,
        "scope": row.scope,
        "api_key_name": row.api_key_name if row.scope == "api_key" else None,
        "integration_name": None,
        "created_at": row.created_at,
        "deprecated_at": row.deprecated_at,
        "valid_until": row.valid_until,
        "last_triggered": row.last_triggered,
        "failure_count": int(row.failure_count),
        "is_active": row.deprecated_at is None,
    }


def _select_webhooks() -> Any:
    return select(_w, _k.c.name.label("api_key_name")).outerjoin(_k, _k.c.id == _w.c.api_key_id)


def _load(conn: Any, org_id: str, webhook_id: str) -> Any:
    row = conn.execute(_select_webhooks().where(_w.c.id == webhook_id, _w.c.organization_id == org_id)).first()
    if row is None:
        raise not_found(f"Webhook {webhook_id} not found", code="webhook_not_found")
    return row


def check_valid_until(value: int | None, now: int) -> int:
    if value is None or value == NEVER:
        return NEVER
    if value <= now:
        raise bad_request("'valid_until' must be -1 (never) or a time in the future (epoch milliseconds)")
    return value


def create_webhook(
    *,
    org_id: str,
    api_key_id: str,
    url: str,
    webhook_type: str,
    scope: str,
    valid_until: int,
    now: int,
) -> Callable[[Batch], tuple[int, dict[str, Any]]]:
    """201 with the signing secret (shown this once); 200 for a URL already registered; 409 past the limit."""

    def existing(batch: Batch) -> tuple[int, dict[str, Any]] | None:
        row = batch.conn.execute(_select_webhooks().where(_w.c.organization_id == org_id, _w.c.url == url)).first()
        if row is None:
            return None
        return 200, {**webhook_view(row), "message": "A webhook for this URL is already registered"}

    def unit(batch: Batch) -> tuple[int, dict[str, Any]]:
        found = existing(batch)
        if found is not None:
            return found
        count = batch.conn.execute(select(func.count()).select_from(_w).where(_w.c.organization_id == org_id))
        if count.scalar_one() >= MAX_WEBHOOKS_PER_ORGANIZATION:
            raise ApiError(
                409,
                "webhook_limit_reached",
                f"An organization can have at most {MAX_WEBHOOKS_PER_ORGANIZATION} webhooks; delete one first",
            )
        secret = new_secret()
        values = {
            "id": new_id("wh_"),
            "organization_id": org_id,
            "api_key_id": api_key_id,
            "url": url,
            "webhook_type": webhook_type,
            "scope": scope,
            "signing_secret": secret,
            "valid_until": valid_until,
            "deprecated_at": None,
            "last_triggered": None,
            "failure_count": 0,
            "rotation_count": 0,
            "rotated_at": None,
            "created_at": now,
        }
        # ON CONFLICT DO NOTHING: another process registering the same URL at the same moment wins, and
        # this request answers 200 with its webhook instead of failing on the unique constraint.
        insert = pg_insert(_w) if batch.is_postgres else sqlite_insert(_w)
        inserted = batch.conn.execute(insert.values(**values).on_conflict_do_nothing()).rowcount
        batch.remember(subscriptions_key(org_id), None)
        if not inserted:
            raced = existing(batch)
            if raced is not None:
                return raced
            raise ApiError(409, "conflict", "The webhook could not be created; try again")
        row = _load(batch.conn, org_id, str(values["id"]))
        return 201, {**webhook_view(row), "signing_secret": secret, "message": "Webhook created"}

    return unit


def update_webhook(
    *, org_id: str, webhook_id: str, changes: dict[str, Any], now: int
) -> Callable[[Batch], dict[str, Any]]:
    """``changes`` may hold ``webhook_type``, ``valid_until`` (-1/None = never) and ``deprecate`` (bool)."""

    def unit(batch: Batch) -> dict[str, Any]:
        row = _load(batch.conn, org_id, webhook_id)
        values: dict[str, Any] = {}
        if "webhook_type" in changes:
            values["webhook_type"] = changes["webhook_type"]
        if "valid_until" in changes:
            values["valid_until"] = check_valid_until(changes["valid_until"], now)
        if "deprecate" in changes:
            if changes["deprecate"] and row.deprecated_at is None:
                values["deprecated_at"] = now
            elif not changes["deprecate"]:
                values["deprecated_at"] = None
        if values:
            batch.conn.execute(update(_w).where(_w.c.id == webhook_id).values(**values))
            batch.remember(subscriptions_key(org_id), None)
        return webhook_view(_load(batch.conn, org_id, webhook_id))

    return unit


def delete_webhook(*, org_id: str, webhook_id: str) -> Callable[[Batch], dict[str, Any]]:
    def unit(batch: Batch) -> dict[str, Any]:
        _load(batch.conn, org_id, webhook_id)
        batch.conn.execute(delete(m.webhook_attempts).where(m.webhook_attempts.c.webhook_id == webhook_id))
        batch.conn.execute(delete(m.webhook_deliveries).where(m.webhook_deliveries.c.webhook_id == webhook_id))
        batch.conn.execute(delete(_w).where(_w.c.id == webhook_id))
        batch.remember(subscriptions_key(org_id), None)
        return {"success": True, "message": f"Webhook {webhook_id} deleted"}

    return unit


def rotate_secret(*, org_id: str, webhook_id: str, rotated_by: str, now: int) -> Callable[[Batch], dict[str, Any]]:
    """A new secret; the old one stops working at once (no overlap window, as Blooio documents)."""

    def unit(batch: Batch) -> dict[str, Any]:
        row = _load(batch.conn, org_id, webhook_id)
        secret = new_secret()
        count = int(row.rotation_count) + 1
        batch.conn.execute(
            update(_w).where(_w.c.id == webhook_id).values(signing_secret=secret, rotation_count=count, rotated_at=now)
        )
        return {
            "webhook_id": webhook_id,
            "signing_secret": secret,
            "rotated_at": now,
            "rotated_by": rotated_by,
            "rotation_count": count,
        }

    return unit


async def list_webhooks(conn: AsyncConnection, org_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(_select_webhooks().where(_w.c.organization_id == org_id).order_by(_w.c.created_at))
    return [webhook_view(r) for r in rows]


async def get_webhook(conn: AsyncConnection, org_id: str, webhook_id: str) -> dict[str, Any]:
    row = (await conn.execute(_select_webhooks().where(_w.c.id == webhook_id, _w.c.organization_id == org_id))).first()
    if row is None:
        raise not_found(f"Webhook {webhook_id} not found", code="webhook_not_found")
    return webhook_view(row)


async def get_webhook_row(conn: AsyncConnection, org_id: str, webhook_id: str) -> Any:
    row = (await conn.execute(select(_w).where(_w.c.id == webhook_id, _w.c.organization_id == org_id))).first()
    if row is None:
        raise not_found(f"Webhook {webhook_id} not found", code="webhook_not_found")
    return row
