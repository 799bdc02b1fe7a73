"""``POST /v2/api/simulator/inbound``: make a simulator number receive a message (tests, demos, bots).

An openbloo addition, authenticated like every route: the number must be a simulator number in the
key's pool. The CLI twin is ``openbloo simulate inbound``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from openbloo.addressing import normalize_handle, normalize_phone
from openbloo.deps import Auth, Rt
from openbloo.errors import ApiError
from openbloo.ids import now_ms
from openbloo.messages.inbound import record_inbound
from openbloo.transports.base import InboundMessage
from openbloo.transports.simulator import handle_protocol

router = APIRouter(tags=["Simulator"])


class InboundAttachment(BaseModel):
    url: str
    name: str | None = None


class SimulatedInbound(BaseModel):
    sender: str = Field(alias="from", description="The author's phone number or e-mail")
    to: str | None = Field(None, description="The receiving simulator number (default: the key's first one)")
    text: str | None = None
    attachments: list[InboundAttachment] = []
    group_id: str | None = Field(None, description="Deliver into this group (grp_…)")


@router.post("/simulator/inbound", summary="Simulate an inbound message on a simulator number", status_code=201)
async def simulate_inbound(body: SimulatedInbound, auth: Auth, rt: Rt) -> dict[str, Any]:
    if body.text is None and not body.attachments:
        raise ApiError(400, "invalid_request", "An inbound message needs 'text' or 'attachments'")
    sender = normalize_handle(body.sender, auth.region).value
    if body.to is not None:
        number = auth.number_by_phone(normalize_phone(body.to, auth.region))
    else:
        number = next((n for n in auth.pool if n.transport == "simulator"), None)
    if number is None:
        raise ApiError(403, "forbidden", "That number is not in this API key's pool")
    if number.transport != "simulator":
        raise ApiError(400, "invalid_request", f"{number.phone_number} is a {number.transport} number, not a simulator")
    stored = await rt.writer.run(
        record_inbound(
            InboundMessage(
                to=number.phone_number,
                sender=sender,
                received_at=now_ms(),
                text=body.text,
                attachments=tuple(a.model_dump() for a in body.attachments),
                protocol=handle_protocol(sender),
                group_id=body.group_id,
            ),
            organization_id=auth.organization_id,
        )
    )
    return {"message_id": stored.message_id, "chat_id": stored.chat_id, "status": "received"}
