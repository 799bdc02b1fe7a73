"""``GET /me`` and ``GET /me/numbers`` (API.md §3.1–3.2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from openbloo.account.schemas import MeNumbersResponse, MeResponse
from openbloo.db import models as m
from openbloo.deps import Auth, Rt
from openbloo.ids import now_ms

router = APIRouter(tags=["Account"])


def _device_state(transport: str, row: Any) -> tuple[str, int | None]:
    """(status, last_seen): the built-in simulator is always online; a device never reached is offline."""
    if transport == "simulator":
        return "online", now_ms()
    if row is None:
        return "offline", None
    return row.device_status or "offline", row.device_last_seen


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


@router.get("/me", response_model=MeResponse, summary="Describe the caller (key, organization, devices, usage)")
async def get_me(auth: Auth, rt: Rt) -> dict[str, Any]:
    ids = [n.id for n in auth.pool]
    n = m.numbers
    usage = {"inbound_messages": 0, "outbound_messages": 0, "last_message_sent": None}
    live: dict[str, Any] = {}
    if ids:
        async with rt.aengine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        n.c.id,
                        n.c.is_active,
                        n.c.last_active_at,
                        n.c.plan_kind,
                        n.c.device_status,
                        n.c.device_last_seen,
                    ).where(n.c.id.in_(ids))
                )
            ).all()
            live = {r.id: r for r in rows}
            totals = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(n.c.inbound_count), 0),
                        func.coalesce(func.sum(n.c.outbound_count), 0),
                        func.max(n.c.last_message_sent),
                    ).where(n.c.id.in_(ids))
                )
            ).one()
        usage = {
            "inbound_messages": int(totals[0]),
            "outbound_messages": int(totals[1]),
            "last_message_sent": totals[2],
        }
    devices = []
    for number in auth.pool:
        row = live.get(number.id)
        status, last_seen = _device_state(number.transport, row)
        devices.append(
            {
                "phone_number": number.phone_number,
                "is_active": bool(row.is_active) if row is not None else number.is_active,
                "last_active": row.last_active_at if row is not None else number.last_active_at,
                "plan_kind": row.plan_kind if row is not None else number.plan_kind,
                "status": status,
                "last_seen": last_seen,
            }
        )
    return {
        "valid": True,
        "auth_type": "api_key",
        "api_key": auth.api_key,
        "organization_id": auth.organization_id,
        "user_id": None,
        "organization": {
            "organization_id": auth.organization_id,
            "name": auth.organization_name,
            "country_code": auth.country_code,
            "created_at": auth.organization_created_at,
        },
        "devices": devices,
        "usage": usage,
        "metadata": auth.key_metadata,
        "integration_details": None,
    }


@router.get("/me/numbers", response_model=MeNumbersResponse, summary="List the numbers this key may send from")
async def list_my_numbers(auth: Auth, rt: Rt) -> dict[str, Any]:
    ids = [n.id for n in auth.pool]
    live: dict[str, Any] = {}
    if ids:
        n = m.numbers
        async with rt.aengine.connect() as conn:
            rows = await conn.execute(
                select(n.c.id, n.c.is_active, n.c.last_active_at, n.c.plan_kind).where(n.c.id.in_(ids))
            )
            live = {r.id: r for r in rows}
    numbers = []
    for number in auth.pool:
        row = live.get(number.id)
        numbers.append(
            {
                "phone_number": number.phone_number,
                "is_active": bool(row.is_active) if row is not None else number.is_active,
                "last_active": _iso(row.last_active_at if row is not None else number.last_active_at),
                "plan_kind": row.plan_kind if row is not None else number.plan_kind,
            }
        )
    return {"numbers": numbers}
