"""Response models of the account routes (mirroring the v2 contract, API.md §3.1–3.2)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

PlanKind = Literal["shared", "dedicated", "inbound", "trial", "2fa"]
DeviceStatus = Literal["online", "degraded", "offline"]


class Organization(BaseModel):
    organization_id: str
    name: str
    country_code: str | None
    created_at: int


class Device(BaseModel):
    phone_number: str | None
    is_active: bool
    last_active: int | None
    plan_kind: PlanKind | None
    # openbloo additions: the device's health (degraded = reachable, some features off) and last contact (ms).
    status: DeviceStatus
    last_seen: int | None


class Usage(BaseModel):
    inbound_messages: int
    outbound_messages: int
    last_message_sent: int | None


class MeResponse(BaseModel):
    valid: bool
    auth_type: Literal["api_key", "dashboard"]
    api_key: str
    organization_id: str
    user_id: str | None
    organization: Organization
    devices: list[Device]
    usage: Usage
    metadata: dict[str, Any]
    integration_details: dict[str, Any] | None


class NumberInfo(BaseModel):
    phone_number: str
    is_active: bool
    last_active: str | None
    plan_kind: PlanKind | None


class MeNumbersResponse(BaseModel):
    numbers: list[NumberInfo]
