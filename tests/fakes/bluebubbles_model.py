"""The fake BlueBubbles Server's memory: chats, messages, uploads, and their JSON shapes (TRANSPORTS.md §1.8).

Kept apart from the HTTP side (``tests/fakes/bluebubbles.py``) so the shapes can be read on their own: every
field the real serializer emits is here, with the values a Mac would give.
"""

from __future__ import annotations

import itertools
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from openbloo.ids import now_ms


def new_guid() -> str:
    return str(uuid.uuid4()).upper()


@dataclass
class Chat:
    guid: str
    participants: list[str]
    display_name: str = ""
    rowid: int = 0

    @property
    def is_group(self) -> bool:
        return ";+;" in self.guid

    @property
    def identifier(self) -> str:
        return self.guid.split(";", 2)[2]

    def json(self, *, participants: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "originalROWID": self.rowid,
            "guid": self.guid,
            "style": 43 if self.is_group else 45,
            "chatIdentifier": self.identifier,
            "isArchived": False,
            "displayName": self.display_name,
        }
        if participants:
            out["participants"] = [handle_json(p) for p in self.participants]
        return out


@dataclass
class Attachment:
    guid: str
    name: str
    mime: str
    content: bytes

    def json(self) -> dict[str, Any]:
        return {
            "originalROWID": 0,
            "guid": self.guid,
            "uti": "public.data",
            "mimeType": self.mime,
            "transferName": self.name,
            "totalBytes": len(self.content),
        }


@dataclass
class Message:
    rowid: int
    guid: str
    chat: Chat
    text: str | None
    is_from_me: bool
    sender: str | None  # the author of an inbound message
    date_created: int = field(default_factory=now_ms)
    date_delivered: int | None = None
    date_read: int | None = None
    error: int = 0
    attachments: list[Attachment] = field(default_factory=list)
    effect_id: str | None = None
    subject: str | None = None
    thread_guid: str | None = None
    thread_part: str | None = None
    associated_guid: str | None = None
    associated_type: str | None = None
    method: str | None = None
    temp_guid: str | None = None  # the send's tempGuid: echoed only in the match webhook, never stored

    @property
    def handle(self) -> str | None:
        if not self.is_from_me:
            return self.sender
        return None if self.chat.is_group else self.chat.identifier

    def json(self, *, chats: bool = True, participants: bool = False, temp_guid: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "originalROWID": self.rowid,
            "guid": self.guid,
            "text": self.text,
            "attributedBody": None,
            "handle": handle_json(self.handle) if self.handle else None,
            "handleId": 1 if self.handle else 0,
            "otherHandle": 0,
            "attachments": [a.json() for a in self.attachments],
            "subject": self.subject,
            "error": self.error,
            "dateCreated": self.date_created,
            "dateRead": self.date_read,
            "dateDelivered": self.date_delivered,
            "isDelivered": self.date_delivered is not None or not self.is_from_me,
            "isFromMe": self.is_from_me,
            "hasDdResults": False,
            "isArchived": False,
            "itemType": 0,
            "groupTitle": None,
            "groupActionType": 0,
            "balloonBundleId": None,
            "associatedMessageGuid": self.associated_guid,
            "associatedMessageType": self.associated_type,
            "expressiveSendStyleId": self.effect_id,
            "threadOriginatorGuid": self.thread_guid,
            "threadOriginatorPart": self.thread_part,
            "hasPayloadData": False,
            "dateEdited": None,
            "dateRetracted": None,
            "partCount": max(1, len(self.attachments) + (1 if self.text else 0)),
        }
        if chats:
            out["chats"] = [self.chat.json(participants=participants and self.chat.is_group)]
        if temp_guid:
            out["tempGuid"] = temp_guid
        return out


def handle_json(address: str) -> dict[str, Any]:
    return {"originalROWID": abs(hash(address)) % 10_000, "address": address, "service": "iMessage"}


class Store:
    """Chats and messages of one fake Mac; every method is called with the fake's lock held."""

    def __init__(self, dm_prefix: str, rng: random.Random) -> None:
        self.dm_prefix = dm_prefix
        self.rng = rng
        self.chats: dict[str, Chat] = {}
        self.messages: list[Message] = []
        self.uploads: dict[str, Attachment] = {}
        self._rowids = itertools.count(1)

    def chat(self, guid: str) -> Chat | None:
        return self.chats.get(guid)

    def dm(self, address: str, service: str = "iMessage", guid: str | None = None) -> Chat:
        for chat in self.chats.values():
            if not chat.is_group and chat.identifier == address and (guid is None or chat.guid == guid):
                return chat
        prefix = "SMS" if service == "SMS" else self.dm_prefix
        return self._add(Chat(guid or f"{prefix};-;{address}", [address]))

    def group(self, participants: list[str], guid: str | None = None) -> Chat:
        wanted = sorted(set(participants))
        for chat in self.chats.values():
            if chat.is_group and (chat.guid == guid if guid else sorted(chat.participants) == wanted):
                return chat
        return self._add(Chat(guid or f"iMessage;+;chat{self.rng.randrange(10**17, 10**18)}", wanted))

    def _add(self, chat: Chat) -> Chat:
        chat.rowid = len(self.chats) + 1
        self.chats[chat.guid] = chat
        return chat

    def add_message(
        self, chat: Chat, text: str | None, *, from_me: bool, sender: str | None = None, **extra: Any
    ) -> Message:
        message = Message(next(self._rowids), new_guid(), chat, text, from_me, sender, **extra)
        self.messages.append(message)
        return message

    def message(self, guid: str) -> Message | None:
        return next((m for m in self.messages if m.guid == guid), None)

    def query(self, body: dict[str, Any]) -> list[Message]:
        found = [m for m in self.messages if not body.get("chatGuid") or m.chat.guid == body["chatGuid"]]
        if body.get("after") is not None:
            found = [m for m in found if m.date_created >= int(body["after"])]
        if body.get("before") is not None:
            found = [m for m in found if m.date_created <= int(body["before"])]
        found.sort(key=lambda m: (m.date_created, m.rowid), reverse=str(body.get("sort", "DESC")).upper() != "ASC")
        offset = int(body.get("offset") or 0)
        return found[offset : offset + int(body.get("limit") or 100)]
