"""Conversation routes: list and read chats, list a chat's messages, cancel a queued message."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from openbloo.addressing import parse_chat_id
from openbloo.chats.reads import get_chat, list_chats, list_messages
from openbloo.delivery import jobs
from openbloo.deps import Auth, EpochMs, Limit, Offset, Rt
from openbloo.ids import now_ms
from openbloo.messages.reads import chat_matches

router = APIRouter(tags=["Chats"])


@router.get("/chats", summary="List conversations")
async def get_chats(
    auth: Auth,
    rt: Rt,
    limit: Limit = 50,
    offset: Offset = 0,
    q: str | None = None,
    sort: Literal["recent", "oldest"] = "recent",
) -> dict[str, Any]:
    async with rt.aengine.connect() as conn:
        chats, total = await list_chats(conn, auth.organization_id, limit=limit, offset=offset, q=q, sort=sort)
    return {"chats": chats, "pagination": {"limit": limit, "offset": offset, "total": total}}


@router.get("/chats/{chatId}", summary="One conversation")
async def get_one_chat(chatId: str, auth: Auth, rt: Rt) -> dict[str, Any]:
    address = parse_chat_id(chatId, auth.region)
    async with rt.aengine.connect() as conn:
        return await get_chat(conn, auth.organization_id, address)


@router.get("/chats/{chatId}/messages", summary="List messages in a chat")
async def get_chat_messages(
    chatId: str,
    auth: Auth,
    rt: Rt,
    limit: Limit = 50,
    offset: Offset = 0,
    sort: Literal["asc", "desc"] = "desc",
    direction: Literal["inbound", "outbound"] | None = None,
    since: EpochMs = None,
    until: EpochMs = None,
) -> dict[str, Any]:
    address = parse_chat_id(chatId, auth.region)
    async with rt.aengine.connect() as conn:
        chat_id, messages, total = await list_messages(
            conn,
            auth.organization_id,
            address,
            limit=limit,
            offset=offset,
            sort=sort,
            direction=direction,
            since=since,
            until=until,
            marks=rt.page_marks,
        )
    return {"chat_id": chat_id, "messages": messages, "pagination": {"limit": limit, "offset": offset, "total": total}}


@router.delete("/chats/{chatId}/messages/{messageId}", summary="Cancel a queued message")
async def cancel_message(chatId: str, messageId: str, auth: Auth, rt: Rt) -> dict[str, Any]:
    address = parse_chat_id(chatId, auth.region)

    def matches(chat_key: str, participants_key: str | None) -> bool:
        return chat_matches(address, chat_key, participants_key)

    result: dict[str, Any] = await rt.writer.run(jobs.cancel(auth.organization_id, messageId, matches, now_ms()))
    return result
