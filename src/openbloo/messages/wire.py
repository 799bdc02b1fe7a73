"""The send request as it arrives on the wire (msgspec): parsed in one pass on the hot path.

These Structs are also the source of the send route's OpenAPI description (``openapi_components``), so
the documented body and the parsed body cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Attachment(msgspec.Struct, forbid_unknown_fields=False):
    url: str
    name: str | None = None


class LinkPreview(msgspec.Struct, forbid_unknown_fields=False):
    title: str | None = None
    image_url: str | None = None


class Part(msgspec.Struct, forbid_unknown_fields=False):
    text: str | None = None
    url: str | None = None
    name: str | None = None
    mention: str | None = None
    link_preview: LinkPreview | None = None


class SendBody(msgspec.Struct, forbid_unknown_fields=False, rename={"from_number_legacy": "fromNumber"}):
    """``POST /chats/{chatId}/messages`` body (API.md §4.2). Unknown fields are ignored, as clients expect."""

    text: str | list[str] | None = None
    attachments: list[str | Attachment] | None = None
    parts: list[Part] | None = None
    link_preview: LinkPreview | None = None
    effect: str | None = None
    # Parsed by hand: any malformed shape must become 400 reply_target_invalid, not a generic error.
    reply_to: Any = None
    share_contact: bool = False
    use_typing_indicator: bool | None = None
    from_number: str | None = None
    from_number_legacy: str | None = None
    metadata: dict[str, Any] | None = None


class SendResponse(msgspec.Struct, omit_defaults=True):
    status: str
    message_id: str | None = None
    message_ids: list[str] | None = None
    count: int | None = None
    group_id: str | None = None
    group_created: bool | None = None
    participants: list[str] | None = None
    parent_unresolved: bool | None = None


decode_send_body = msgspec.json.Decoder(SendBody).decode
encode = msgspec.json.Encoder().encode


def openapi_components() -> tuple[dict[str, Any], dict[str, Any]]:
    """JSON Schemas of the request and response bodies, for the OpenAPI document."""
    (req, resp), components = msgspec.json.schema_components(
        [SendBody, SendResponse], ref_template="#/components/schemas/{name}"
    )
    return {"request": req, "response": resp}, components
