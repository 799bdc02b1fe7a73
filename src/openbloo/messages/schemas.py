"""Response models of the message reads (API.md §3.5, §5.1), used for validation-free docs and shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class ContactRef(BaseModel):
    contact_id: str
    identifier: str
    name: str | None


class ReplyTo(BaseModel):
    guid: str | None
    message_id: str | None
    part_index: int


class Reaction(BaseModel):
    reaction: str
    is_added: bool
    sender: str | None
    time_sent: int


class Message(BaseModel):
    message_id: str
    chat_id: str
    direction: Literal["inbound", "outbound"]
    internal_id: str | None
    contact: ContactRef | None
    sender: str | None
    text: str | None
    attachments: list[dict[str, Any]]
    reactions: list[Reaction]
    time_sent: int
    time_delivered: int | None
    time_read: int | None
    status: str | None
    protocol: str
    error: str | None
    reply_to: ReplyTo | None
    effect: str | None
    metadata: dict[str, Any] | None


class MessageStatus(BaseModel):
    message_id: str
    chat_id: str
    direction: Literal["inbound", "outbound"]
    status: str | None
    protocol: str
    time_sent: int
    time_delivered: int | None
    error: str | None
