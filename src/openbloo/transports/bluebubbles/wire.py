"""BlueBubbles Server's data, read without I/O: chat GUIDs, effect ids, message objects, webhook events.

Everything here is a pure function of what the server sent, so the webhook route (which may run in an API
process with no transport), the reconciler and the transport all read the device the same way.

Chat GUIDs are ``<service>;<sep>;<identifier>``: ``;-;`` a 1:1 chat, ``;+;`` a group. The service prefix
varies for the same conversation (``iMessage;-;``, ``SMS;-;``, and ``any;-;`` on macOS 26), so a chat is
identified by its separator and identifier only (:func:`chat_identity`); a 1:1 chat is keyed by the
handle, never by the GUID, and a ``;-;`` GUID is never taken for a group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The official client's effect names → Apple's expressive-send ids (the server passes them through).
EFFECT_IDS: dict[str, str] = {
    "slam": "com.apple.MobileSMS.expressivesend.impact",
    "loud": "com.apple.MobileSMS.expressivesend.loud",
    "gentle": "com.apple.MobileSMS.expressivesend.gentle",
    "invisible-ink": "com.apple.MobileSMS.expressivesend.invisibleink",
    "echo": "com.apple.messages.effect.CKEchoEffect",
    "spotlight": "com.apple.messages.effect.CKSpotlightEffect",
    "balloons": "com.apple.messages.effect.CKHappyBirthdayEffect",
    "confetti": "com.apple.messages.effect.CKConfettiEffect",
    "love": "com.apple.messages.effect.CKHeartEffect",
    "lasers": "com.apple.messages.effect.CKLasersEffect",
    "fireworks": "com.apple.messages.effect.CKFireworksEffect",
    "celebration": "com.apple.messages.effect.CKSparklesEffect",
}
CHAT_SERVICES = ("iMessage", "any", "SMS")
WEBHOOK_EVENTS = (
    "new-message",
    "updated-message",
    "message-send-error",
    "typing-indicator",
    "chat-read-status-changed",
)
# Events whose data is a Message object.
MESSAGE_EVENTS = frozenset({"new-message", "updated-message", "message-send-error"})
TEMP_GUID_PREFIX = "openbloo-"
NOT_ON_IMESSAGE = 22
KNOWN_ERRORS = {
    4: "the message timed out",
    NOT_ON_IMESSAGE: "the recipient is not reachable over iMessage",
}


def temp_guid(transport_ref: str, piece: int = 0) -> str:
    """The ``tempGuid`` of a job (and of the n-th extra device message of one openbloo message)."""
    return f"{TEMP_GUID_PREFIX}{transport_ref}" + (f".{piece}" if piece else "")


def ref_of_temp_guid(value: str | None) -> str | None:
    """The job reference a ``tempGuid`` names, or None if it is not one of ours (or an extra piece's: the
    message is tracked by its first device message only)."""
    if not value or not value.startswith(TEMP_GUID_PREFIX) or "." in value:
        return None
    return value[len(TEMP_GUID_PREFIX) :] or None


def chat_identity(guid: str | None) -> tuple[bool, str] | None:
    """``(is_group, identifier)`` of a chat GUID, the same for every service prefix; None if malformed."""
    if not guid:
        return None
    parts = guid.split(";", 2)
    if len(parts) != 3 or parts[1] not in ("-", "+") or not parts[2]:
        return None
    return parts[1] == "+", parts[2]


def chat_variants(guid: str) -> tuple[str, ...]:
    """Every spelling of one chat's GUID (``iMessage;+;chat1``, ``any;+;chat1``, ``SMS;+;chat1``)."""
    identity = chat_identity(guid)
    if identity is None:
        return (guid,)
    sep = "+" if identity[0] else "-"
    return tuple(dict.fromkeys([guid, *(f"{s};{sep};{identity[1]}" for s in CHAT_SERVICES)]))


def dm_guid_candidates(handle: str) -> tuple[str, ...]:
    return tuple(f"{s};-;{handle}" for s in CHAT_SERVICES)


def private_api_refusal(text: str) -> str | None:
    """``disabled`` / ``disconnected`` if ``text`` is the server's Private API middleware refusing, else None."""
    if "Private API is not enabled" in text:
        return "disabled"
    if "Helper is not connected" in text:
        return "disconnected"
    return None


def describe_error(code: int) -> str:
    known = KNOWN_ERRORS.get(code)
    return f"Messages reported error {code}" + (f": {known}" if known else "")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    # The server already drops U+FFFC attachment placeholders; be tolerant of ones that slip through.
    cleaned = value.replace("\ufffc", "").strip()
    return cleaned or None


@dataclass(frozen=True, slots=True)
class DeviceChat:
    guid: str
    is_group: bool
    identifier: str
    participants: tuple[str, ...] = ()
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    """A Message object, as far as openbloo needs it."""

    guid: str
    is_from_me: bool
    date_created: int
    text: str | None = None
    temp_guid: str | None = None
    handle: str | None = None  # the other party in a 1:1 chat; the author of an inbound message
    service: str | None = None  # "iMessage" | "SMS" (of the handle)
    chat: DeviceChat | None = None
    date_delivered: int | None = None
    date_read: int | None = None
    error: int = 0
    item_type: int = 0  # 0 = a message; 1..3 = group events (renames, members)
    associated_guid: str | None = None  # set on tapbacks
    attachments: tuple[dict[str, Any], ...] = ()

    @property
    def protocol(self) -> str:
        if self.service == "SMS" or (self.chat is not None and self.chat.guid.startswith("SMS;")):
            return "sms"
        return "imessage"

    @property
    def is_plain_message(self) -> bool:
        """A real message (not a tapback, not a group event) with something in it."""
        return self.item_type == 0 and not self.associated_guid and bool(self.text or self.attachments)


def parse_chat(data: Any) -> DeviceChat | None:
    if not isinstance(data, dict) or not isinstance(data.get("guid"), str):
        return None
    identity = chat_identity(data["guid"])
    if identity is None:
        return None
    is_group = identity[0] or data.get("style") == 43
    participants = tuple(
        p["address"]
        for p in data.get("participants") or ()
        if isinstance(p, dict) and isinstance(p.get("address"), str)
    )
    name = data.get("displayName")
    return DeviceChat(data["guid"], is_group, identity[1], participants, name if isinstance(name, str) else None)


def parse_message(data: Any) -> DeviceMessage | None:
    """A Message object (REST or webhook form); None if it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("guid"), str) or not data["guid"]:
        return None
    raw_handle = data.get("handle")
    handle: dict[str, Any] = raw_handle if isinstance(raw_handle, dict) else {}
    chats = [c for c in (parse_chat(c) for c in data.get("chats") or ()) if c is not None]
    attachments = tuple(
        {
            "guid": a.get("guid"),
            "name": a.get("transferName"),
            "mime_type": a.get("mimeType"),
            "size": _int(a.get("totalBytes")),
        }
        for a in data.get("attachments") or ()
        if isinstance(a, dict) and isinstance(a.get("guid"), str)
    )
    temp = data.get("tempGuid")
    return DeviceMessage(
        guid=data["guid"],
        is_from_me=bool(data.get("isFromMe")),
        date_created=_int(data.get("dateCreated")) or 0,
        text=_text(data.get("text")),
        temp_guid=temp if isinstance(temp, str) and temp else None,
        handle=handle.get("address") if isinstance(handle.get("address"), str) else None,
        service=handle.get("service") if isinstance(handle.get("service"), str) else None,
        chat=chats[0] if chats else None,
        date_delivered=_int(data.get("dateDelivered")),
        date_read=_int(data.get("dateRead")),
        error=_int(data.get("error")) or 0,
        item_type=_int(data.get("itemType")) or 0,
        associated_guid=data.get("associatedMessageGuid") or None,
        attachments=attachments,
    )


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    type: str
    message: DeviceMessage | None = None
    data: Any = None


def parse_event(body: Any) -> DeviceEvent | None:
    """A webhook body ``{"type", "data"}``; None if it is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return None
    kind = body["type"]
    data = body.get("data")
    return DeviceEvent(kind, parse_message(data) if kind in MESSAGE_EVENTS else None, data)


def same_text(a: str | None, b: str | None) -> bool:
    """Texts equal up to whitespace (the device trims, and joins multipart text its own way)."""
    return "".join((a or "").split()) == "".join((b or "").split())
