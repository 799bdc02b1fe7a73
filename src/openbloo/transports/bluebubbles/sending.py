"""How one openbloo message becomes BlueBubbles requests.

- The chat: a stored GUID (group or 1:1), else, for a 1:1 chat, each GUID spelling is asked for
  (``iMessage;-;``, ``any;-;``, ``SMS;-;``), else the chat does not exist yet and ``chat/new`` creates it
  with the message's text.
- The body: text → ``message/text`` (with ``effectId``, or ``selectedMessageGuid`` + ``partIndex`` for a
  reply); ``parts``, or text with attachments when the Private API is on → ``message/multipart`` after
  uploading each file; otherwise each attachment → ``message/attachment``. Attachments are downloaded from
  their URL first (size-bounded, with a timeout).
- The receipt names the device message (its GUID, what delivery news will match on) and the chat.
"""

from __future__ import annotations

import contextlib
import mimetypes
import posixpath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from openbloo.ids import now_ms
from openbloo.transports.base import Outgoing, PermanentError, Receipt, TransientError
from openbloo.transports.bluebubbles import wire
from openbloo.transports.bluebubbles.client import DeviceError

if TYPE_CHECKING:
    from openbloo.transports.bluebubbles.transport import BlueBubblesTransport

MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024  # iMessage's own limit for one file
DOWNLOAD_TIMEOUT = 60.0


class MessagesError(PermanentError):
    """Messages on the Mac made the message but could not send it. ``messages_error``: its error code (22: the
    recipient is not on iMessage), 0 when the server's answer did not say (its 500 often carries no message)."""

    def __init__(self, messages_error: int = 0) -> None:
        detail = wire.describe_error(messages_error) if messages_error else "Messages reported an error sending it"
        super().__init__(f"The Mac could not send the message: {detail}", code="device_send_error")
        self.messages_error = messages_error


def device_info(info: dict[str, Any]) -> dict[str, Any]:
    """The part of ``server/info`` openbloo keeps (``numbers.device_info``)."""
    return {
        "private_api": bool(info.get("private_api")),
        "helper_connected": bool(info.get("helper_connected")),
        "server_version": info.get("server_version"),
        "os_version": info.get("os_version"),
    }


def private_api_words(info: dict[str, Any]) -> str:
    if not info.get("private_api"):
        return (
            "Private API: off. Plain text, attachments and first messages to one person work; effects and "
            "replies are refused (400), and new group chats, multipart messages and typing need it."
        )
    if not info.get("helper_connected"):
        return "Private API: on, but its helper is not connected to Messages: sends that need it wait and retry."
    return "Private API: on, helper connected: effects, replies, reactions, typing and group chats are available."


def error_of(data: Any) -> int:
    """The Messages error code of a message object an error answer carried, or 0."""
    dm = wire.parse_message(data)
    return dm.error if dm is not None else 0


def expected_text(message: Outgoing) -> str | None:
    """The text the device will show for ``message`` (what a crash search matches on)."""
    if message.text:
        return message.text
    texts = [p["text"] for p in message.parts if p.get("text")]
    return "".join(texts) or None


def _needs_private_api(message: Outgoing) -> bool:
    return bool(message.effect or message.reply_to or message.parts or (message.is_group and not message.chat_guid))


async def send(transport: BlueBubblesTransport, message: Outgoing) -> Receipt:
    needs = _needs_private_api(message)
    papi = transport.private_api
    if needs and transport.info.get("private_api") is False:
        raise PermanentError(
            "This needs the BlueBubbles Private API, which is off on the Mac", code="private_api_disabled"
        )
    if needs and papi is False:
        raise TransientError("The BlueBubbles Private API helper is not connected", code="device_degraded")
    method = "private-api" if (needs or papi) else "apple-script"
    try:
        return await _send(transport, message, method)
    except DeviceError as exc:
        # The helper went away since the last health check: a plain send can still go by AppleScript.
        if method == "private-api" and not needs and wire.private_api_refusal(exc.text) is not None:
            transport.info["helper_connected"] = False
            return await _send(transport, message, "apple-script")
        raise


async def _send(transport: BlueBubblesTransport, message: Outgoing, method: str) -> Receipt:
    client = transport.client
    temp = wire.temp_guid(message.transport_ref)
    chat = message.chat_guid or await _existing_dm(transport, message)
    common: dict[str, Any] = {"tempGuid": temp, "method": method}
    if message.effect:
        common["effectId"] = wire.EFFECT_IDS[message.effect]
    if message.reply_to is not None:
        guid = message.reply_to.get("guid")
        if not guid:
            raise PermanentError("The reply target never reached the device", code="reply_target_not_found")
        common["selectedMessageGuid"] = guid
        common["partIndex"] = int(message.reply_to.get("part_index") or 0)
    files = [await _download(a) for a in message.attachments]
    if chat and message.options.get("use_typing_indicator") and transport.private_api:
        with contextlib.suppress(DeviceError):  # typing is a nicety; the message itself matters
            await client.typing(chat)
    ref = message.transport_ref
    if chat is None:
        first = await _new_chat(transport, message, common)
        if files:
            await _attachments(transport, first.chat_guid or "", files, ref, method, first=None)
        return first
    if message.parts or (files and message.text and method == "private-api"):
        data = await _multipart(transport, message, chat, files, common)
    elif files:
        if message.text:
            data = await client.send_text({"chatGuid": chat, "message": message.text, **common})
            await _attachments(transport, chat, files, ref, method, first=None)
        else:
            data = await _attachments(transport, chat, files, ref, method, first=common)
    else:
        data = await client.send_text({"chatGuid": chat, "message": message.text or "", **common})
    return _receipt(data, chat)


async def _existing_dm(transport: BlueBubblesTransport, message: Outgoing) -> str | None:
    if message.is_group:
        return None
    for guid in wire.dm_guid_candidates(message.recipients[0]):
        found = await transport.client.chat(guid)
        if found is not None and isinstance(found.get("guid"), str):
            return str(found["guid"])
    return None


async def _new_chat(transport: BlueBubblesTransport, message: Outgoing, common: dict[str, Any]) -> Receipt:
    text = expected_text(message)
    if not text:
        raise PermanentError("A first message to a new chat needs text", code="attachment_first_message_not_allowed")
    if message.reply_to is not None:
        # chat/new cannot thread a reply, and a chat the device does not have holds no reply target.
        raise PermanentError("The reply target's chat does not exist on the device", code="reply_target_not_found")
    body: dict[str, Any] = {"addresses": list(message.recipients), "message": text, "service": "iMessage", **common}
    body.pop("selectedMessageGuid", None)
    body.pop("partIndex", None)
    known = message.options.get("service")  # a caller that already asked (a hybrid number's transport)
    if known in ("iMessage", "SMS"):
        body["service"] = known
    elif not message.is_group and transport.private_api:
        with contextlib.suppress(DeviceError):  # unknown: iMessage, the server's own default
            if not await transport.client.imessage_available(message.recipients[0]):
                body["service"] = "SMS"
    data = await transport.client.new_chat(body)
    chat = data if isinstance(data, dict) else {}
    first = next((m for m in chat.get("messages") or () if isinstance(m, dict)), None)
    return _receipt(first, chat.get("guid") if isinstance(chat.get("guid"), str) else None)


async def _multipart(
    transport: BlueBubblesTransport,
    message: Outgoing,
    chat: str,
    files: list[tuple[str, bytes, str]],
    common: dict[str, Any],
) -> Any:
    parts: list[dict[str, Any]] = []
    if message.parts:
        for part in message.parts:
            if part.get("url"):
                name, content, mime = await _download(part)
                path = await transport.client.upload_attachment(name, content, mime)
                parts.append({"partIndex": len(parts), "attachment": path, "name": name})
            elif part.get("text"):
                entry: dict[str, Any] = {"partIndex": len(parts), "text": part["text"]}
                if part.get("mention"):
                    entry["mention"] = part["mention"]
                parts.append(entry)
    else:
        parts.append({"partIndex": 0, "text": message.text})
        for name, content, mime in files:
            path = await transport.client.upload_attachment(name, content, mime)
            parts.append({"partIndex": len(parts), "attachment": path, "name": name})
    body = {"chatGuid": chat, "parts": parts, **common}
    body.pop("method", None)  # multipart is always the Private API
    return await transport.client.send_multipart(body)


async def _attachments(
    transport: BlueBubblesTransport,
    chat: str,
    files: list[tuple[str, bytes, str]],
    ref: str,
    method: str,
    first: dict[str, Any] | None,
) -> Any:
    """Each file as its own ``message/attachment``; returns the first one's message.

    With ``first`` (the effect / reply fields), the first file is the message itself and carries the job's
    own ``tempGuid``; otherwise the files follow a text already sent and carry piece ``tempGuid`` s.
    """
    result: Any = None
    offset = 0 if first is not None else 1
    for i, (name, content, mime) in enumerate(files):
        fields = {"chatGuid": chat, "name": name, "method": method, "tempGuid": wire.temp_guid(ref, i + offset)}
        if i == 0 and first is not None:
            fields.update(
                {k: str(v) for k, v in first.items() if k in ("effectId", "selectedMessageGuid", "partIndex")}
            )
        if mime.startswith("audio/") and len(files) == 1:
            fields["isAudioMessage"] = "true"
        data = await transport.client.send_attachment(fields, name, content, mime)
        result = result if result is not None else data
    return result


def _receipt(data: Any, chat: str | None) -> Receipt:
    dm = wire.parse_message(data)
    if dm is None:
        # The server answered 200 without a message: it is on the device, under a GUID webhooks will tell.
        return Receipt(None, "imessage", now_ms(), chat)
    if dm.error:
        raise MessagesError(dm.error)
    return Receipt(dm.guid, dm.protocol, dm.date_created or now_ms(), chat or (dm.chat.guid if dm.chat else None))


def _file_name(attachment: dict[str, Any]) -> str:
    name = attachment.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    tail = posixpath.basename(urlsplit(str(attachment.get("url") or "")).path)
    return tail or "attachment"


async def _download(attachment: dict[str, Any]) -> tuple[str, bytes, str]:
    """(file name, bytes, MIME type) of an attachment URL, refusing files over iMessage's limit."""
    url = str(attachment.get("url") or "")
    name = _file_name(attachment)
    try:
        async with (
            httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True) as http,
            http.stream("GET", url) as response,
        ):
            if response.status_code >= 400:
                error = f"Downloading attachment {url} failed: HTTP {response.status_code}"
                if response.status_code in (408, 429) or response.status_code >= 500:
                    raise TransientError(error, code="attachment_unavailable")
                raise PermanentError(error, code="attachment_download_failed")
            declared = int(response.headers.get("content-length") or 0)
            if declared > MAX_ATTACHMENT_BYTES:
                raise PermanentError(f"Attachment {url} is larger than 100 MB", code="attachment_too_large")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_ATTACHMENT_BYTES:
                    raise PermanentError(f"Attachment {url} is larger than 100 MB", code="attachment_too_large")
                chunks.append(chunk)
            mime = response.headers.get("content-type", "").split(";")[0].strip()
    except httpx.HTTPError as exc:
        raise TransientError(
            f"Downloading attachment {url} failed ({type(exc).__name__})", code="attachment_unavailable"
        ) from None
    if not mime or mime == "application/octet-stream":
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return name, b"".join(chunks), mime
