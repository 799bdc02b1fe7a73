"""Message routes: the documented send (served by the lean lane, see :mod:`send_lane`) and the reads."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from openbloo.addressing import parse_chat_id
from openbloo.deps import Auth, Rt
from openbloo.messages.reads import load_message
from openbloo.messages.schemas import Message, MessageStatus
from openbloo.messages.wire import openapi_components

router = APIRouter(tags=["Messages"])

_send_schemas, SEND_COMPONENTS = openapi_components()
_ERROR = {"$ref": "#/components/schemas/ApiError"}


def _responses() -> dict[int | str, dict[str, Any]]:
    ok = {"application/json": {"schema": _send_schemas["response"]}}
    err = {"application/json": {"schema": _ERROR}}
    return {
        202: {"description": "Accepted: the message(s) are durably queued", "content": ok},
        200: {"description": "Idempotent replay: the original response", "content": ok},
        **{
            code: {"description": desc, "content": err}
            for code, desc in (
                (400, "Invalid request (bad chat id, body rules, effect, reply_to ...)"),
                (401, "Missing or invalid API key"),
                (403, "Not allowed (sender number, plan, emergency number ...)"),
                (404, "Reply target or group not found"),
                (409, "Idempotency-Key reused with a different request"),
                (429, "Outbound or new-conversation quota reached"),
                (503, "No active number available"),
            )
        },
    }


@router.post(
    "/chats/{chatId}/messages",
    summary="Send a message",
    status_code=202,
    responses=_responses(),
    openapi_extra={
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
            },
            {"name": "X-From-Number", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _send_schemas["request"]}},
        },
    },
)
async def send_message(chatId: str, request: Request, auth: Auth, rt: Rt) -> Response:
    """Reached only when the app runs without its ASGI front; normally the lean lane answers first."""
    from openbloo.messages.send_lane import SendLane

    lane: SendLane = rt.extras.setdefault("send_lane", SendLane(rt))
    headers = request.headers
    body = await request.body()
    outcome = await lane.submit(auth, chatId, body, headers.get("idempotency-key"), headers.get("x-from-number"))
    return Response(outcome.body, status_code=outcome.status, media_type="application/json")


@router.get("/chats/{chatId}/messages/{messageId}", response_model=Message, summary="Get one message")
async def get_message(chatId: str, messageId: str, auth: Auth, rt: Rt) -> dict[str, Any]:
    address = parse_chat_id(chatId, auth.region)
    async with rt.aengine.connect() as conn:
        return await load_message(conn, auth.organization_id, address, messageId)


@router.get("/chats/{chatId}/messages/{messageId}/status", response_model=MessageStatus, summary="Delivery status")
async def get_message_status(chatId: str, messageId: str, auth: Auth, rt: Rt) -> dict[str, Any]:
    address = parse_chat_id(chatId, auth.region)
    async with rt.aengine.connect() as conn:
        msg = await load_message(conn, auth.organization_id, address, messageId)
    return {k: msg[k] for k in MessageStatus.model_fields}
