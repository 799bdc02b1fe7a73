"""Event payloads in the v2 flat webhook format (API.md §6.4), built once when the event is recorded."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=4096)
def device_id(number_id: str | None) -> str | None:
    """A stable, hashed identifier of the device (number) that handled the event."""
    if number_id is None:
        return None
    return hashlib.sha256(number_id.encode()).hexdigest()[:8].upper()


def message_payload(
    event: str,
    *,
    message_id: str,
    external_id: str,
    internal_id: str | None,
    number_id: str | None,
    status: str,
    protocol: str,
    timestamp: int,
    text: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
    group: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": event,
        "message_id": message_id,
        "external_id": external_id,
        "internal_id": internal_id,
        "protocol": protocol,
        "status": status,
        "timestamp": timestamp,
        "device_id": device_id(number_id),
        "is_group": group is not None,
    }
    if group is not None:
        payload["group_id"] = group["group_id"]
        payload["group_name"] = group.get("group_name")
        payload["participants"] = group.get("participants", [])
        if group.get("chat_guid"):
            payload["chat_guid"] = group["chat_guid"]
    if text is not None:
        payload["text"] = text
    if attachments:
        payload["attachments"] = attachments
    payload.update(fields)
    return payload
