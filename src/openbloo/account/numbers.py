"""Sender numbers (allocations): add, list, reconfigure. Units of work used by the CLI and the bootstrap.

Views of a number show its transport configuration with every secret masked
(:func:`openbloo.transports.config.public_config`) and, given the public base URL, the callback URLs its
devices must call.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update

from openbloo.auth.keys import get_or_create_org, hash_key
from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.errors import ApiError
from openbloo.ids import new_id, now_ms
from openbloo.transports.config import TRANSPORTS, callback_urls, inbound_url, new_inbound_token, public_config

PLAN_KINDS = ("shared", "dedicated", "inbound", "trial", "2fa")


def _key_id(batch: Batch, key_or_prefix: str, org_name: str) -> str:
    """The id of the key matching a full key or display prefix; it must belong to organization ``org_name``.

    Read-only, so units call it before writing anything (a unit's earlier writes survive its ApiError).
    """
    t, o = m.api_keys, m.organizations
    row = batch.conn.execute(
        select(t.c.id, o.c.name.label("org_name"))
        .join(o, o.c.id == t.c.organization_id)
        .where((t.c.prefix == key_or_prefix) | (t.c.key_hash == hash_key(key_or_prefix)))
    ).first()
    if row is None:
        raise ApiError(404, "not_found", f"No API key matches {key_or_prefix!r}")
    if row.org_name != org_name:
        raise ApiError(400, "invalid_request", f"API key {key_or_prefix!r} belongs to another organization")
    return str(row.id)


def number_view(row: Any, key_prefixes: list[str] | None = None, public_url: str | None = None) -> dict[str, Any]:
    """A number as the CLI prints it. Secrets are masked; callback URLs are included when ``public_url`` is known."""
    config = row.transport_config or {}
    view: dict[str, Any] = {
        "allocation_id": row.id,
        "phone_number": row.phone_number,
        "organization_id": row.organization_id,
        "transport": row.transport,
        "transport_settings": sorted(config),
        "transport_config": public_config(config),
        "plan_kind": row.plan_kind,
        "is_active": bool(row.is_active),
        "daily_limit": row.daily_limit,
        "new_conversation_cap": row.new_conversation_cap,
        "keys": key_prefixes or [],
        "device_status": row.device_status,
        "device_last_seen": row.device_last_seen,
        "created_at": row.created_at,
    }
    if public_url is not None:
        view["inbound_url"] = inbound_url(row.transport, row.inbound_token, public_url)
        view["inbound_urls"] = callback_urls(row.transport, row.inbound_token, public_url)
    return view


def _prefixes(batch: Batch, number_id: str) -> list[str]:
    nk, k = m.number_api_keys, m.api_keys
    rows = batch.conn.execute(select(k.c.prefix).join(nk, nk.c.api_key_id == k.c.id).where(nk.c.number_id == number_id))
    return [r.prefix for r in rows]


def add_number(
    phone_number: str,
    *,
    org_name: str,
    transport: str = "simulator",
    plan_kind: str | None = None,
    key: str | None = None,
    transport_config: dict[str, Any] | None = None,
    public_url: str | None = None,
) -> Any:
    if transport not in TRANSPORTS:
        raise ApiError(400, "invalid_request", f"Unknown transport {transport!r}; one of {', '.join(TRANSPORTS)}")
    if plan_kind is not None and plan_kind not in PLAN_KINDS:
        raise ApiError(400, "invalid_request", f"Unknown plan {plan_kind!r}; one of {', '.join(PLAN_KINDS)}")

    def unit(batch: Batch) -> dict[str, Any]:
        existing = batch.conn.execute(select(m.numbers.c.id).where(m.numbers.c.phone_number == phone_number)).first()
        if existing is not None:
            raise ApiError(409, "conflict", f"{phone_number} is already configured (allocation {existing.id})")
        key_id = _key_id(batch, key, org_name) if key is not None else None
        org = get_or_create_org(batch, org_name)
        row = {
            "id": new_id("alloc_"),
            "organization_id": org["id"],
            "phone_number": phone_number,
            "transport": transport,
            "transport_config": transport_config or {},
            "plan_kind": plan_kind,
            "is_active": True,
            "inbound_count": 0,
            "outbound_count": 0,
            "day_outbound": 0,
            "day_new_conversations": 0,
            "inbound_token": new_inbound_token(),
            "created_at": now_ms(),
        }
        batch.conn.execute(m.numbers.insert().values(**row))
        if key_id is not None:
            batch.conn.execute(m.number_api_keys.insert().values(number_id=row["id"], api_key_id=key_id))
        stored = batch.conn.execute(select(m.numbers).where(m.numbers.c.id == row["id"])).one()
        return number_view(stored, _prefixes(batch, row["id"]), public_url)

    return unit


def load_number(phone_number: str) -> Any:
    """The stored row of a number (``numbers check`` builds its transport from it)."""

    def unit(batch: Batch) -> Any:
        row = batch.conn.execute(select(m.numbers).where(m.numbers.c.phone_number == phone_number)).first()
        if row is None:
            raise ApiError(404, "not_found", f"No number {phone_number} is configured")
        return row

    return unit


def list_numbers(org_name: str | None, public_url: str | None = None) -> Any:
    def unit(batch: Batch) -> list[dict[str, Any]]:
        n, o = m.numbers, m.organizations
        stmt = select(n, o.c.name.label("organization")).join(o, o.c.id == n.c.organization_id)
        if org_name is not None:
            stmt = stmt.where(o.c.name == org_name)
        out = []
        for r in batch.conn.execute(stmt.order_by(o.c.name, n.c.created_at)):
            view = number_view(r, _prefixes(batch, r.id), public_url)
            view["organization"] = r.organization
            out.append(view)
        return out

    return unit


_UNSET: Any = object()


def set_number(
    phone_number: str,
    *,
    plan_kind: Any = _UNSET,
    daily_limit: int | None = None,
    new_conversation_cap: int | None = None,
    is_active: bool | None = None,
    key: Any = _UNSET,
    transport_config: Any = None,
    public_url: str | None = None,
) -> Any:
    """Reconfigure a number. ``plan_kind=None`` clears the plan; a limit of 0 means none.

    ``transport_config`` is a function of the stored configuration and transport returning the new one
    (so the CLI can merge a changed password into what is stored, checked for the number's transport).
    """
    if plan_kind is not _UNSET and plan_kind is not None and plan_kind not in PLAN_KINDS:
        raise ApiError(400, "invalid_request", f"Unknown plan {plan_kind!r}; one of {', '.join(PLAN_KINDS)}")

    def unit(batch: Batch) -> dict[str, Any]:
        n, o = m.numbers, m.organizations
        row = batch.conn.execute(
            select(n.c.id, n.c.transport, n.c.transport_config, o.c.name.label("org_name"))
            .join(o, o.c.id == n.c.organization_id)
            .where(n.c.phone_number == phone_number)
        ).first()
        if row is None:
            raise ApiError(404, "not_found", f"No number {phone_number} is configured")
        key_id = _key_id(batch, key, row.org_name) if key is not _UNSET and key is not None else None
        values: dict[str, Any] = {}
        if plan_kind is not _UNSET:
            values["plan_kind"] = plan_kind
        if daily_limit is not None:
            values["daily_limit"] = daily_limit or None
        if new_conversation_cap is not None:
            values["new_conversation_cap"] = new_conversation_cap or None
        if is_active is not None:
            values["is_active"] = is_active
        if transport_config is not None:
            values["transport_config"] = transport_config(row.transport, row.transport_config or {})
        if values:
            batch.conn.execute(update(n).where(n.c.id == row.id).values(**values))
        if key is not _UNSET:
            batch.conn.execute(delete(m.number_api_keys).where(m.number_api_keys.c.number_id == row.id))
            if key_id is not None:
                batch.conn.execute(m.number_api_keys.insert().values(number_id=row.id, api_key_id=key_id))
        stored = batch.conn.execute(select(n).where(n.c.id == row.id)).one()
        return number_view(stored, _prefixes(batch, row.id), public_url)

    return unit
