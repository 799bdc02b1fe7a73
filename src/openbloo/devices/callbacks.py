"""Device callbacks: the routes devices call, outside ``/v2/api`` (no API key; the URL's token is the proof).

``POST /callbacks/bluebubbles/{token}`` takes BlueBubbles webhooks. The token is looked up (cached for a few
seconds) to find the number; a missing or wrong token is a 404 in the usual envelope and changes nothing.
The payload is read by the pure functions of :mod:`openbloo.transports.bluebubbles.wire` and written through
the writer, so this works in an API-only process (``serve --no-workers``) with no transport running.

``GET /callbacks/bluebubbles/media/{number_id}/{guid}?sig=…`` serves an inbound attachment, fetched from the
Mac on request (its own download URL needs the server password, which never leaves openbloo).

``POST /callbacks/twilio/{token}/inbound`` (the number's "A message comes in" webhook) and
``POST /callbacks/twilio/{token}/status`` (the ``StatusCallback`` of each message, with ``?message_id=``)
take Twilio's form-encoded requests. After the token, every request's ``X-Twilio-Signature`` is checked
with the number's auth token over the URL Twilio called, rebuilt as the configured public base URL + the
path + the raw query string (byte for byte: behind a TLS-terminating proxy the request's own URL differs);
a missing or wrong signature is a 403 and changes nothing. Inbound messages are answered with empty TwiML.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from openbloo.config import public_base_url
from openbloo.db import models as m
from openbloo.deps import Rt
from openbloo.devices.bluebubbles import Applied, DeviceNumber, apply_messages, media_signature
from openbloo.devices.twilio import apply_inbound, apply_status
from openbloo.errors import ApiError
from openbloo.runtime import Runtime
from openbloo.transports.bluebubbles import wire
from openbloo.transports.bluebubbles.client import BlueBubblesClient, DeviceError
from openbloo.transports.config import CALLBACK_PREFIX
from openbloo.transports.twilio.callbacks import (
    MESSAGE_ID_PARAM,
    SIGNATURE_HEADER,
    TWIML_CONTENT_TYPE,
    empty_twiml,
    parse_inbound,
    parse_status_callback,
    verify_signature,
)

log = logging.getLogger("openbloo.callbacks")

router = APIRouter(prefix=CALLBACK_PREFIX, include_in_schema=False)
BLUEBUBBLES_KINDS = frozenset({"bluebubbles", "hybrid"})
TWILIO_KINDS = frozenset({"twilio", "hybrid"})
MAX_FORM_BYTES = 256 * 1024  # an inbound MMS with ten media and 1,600 characters is a few kilobytes

_n = m.numbers
_NUMBER = select(
    _n.c.id, _n.c.organization_id, _n.c.phone_number, _n.c.transport, _n.c.inbound_token, _n.c.transport_config
)


class CallbackNumbers:
    """Token (or id) → number, cached: a device's every webhook must not cost a database read."""

    def __init__(self, engine: AsyncEngine, public_url: str, ttl: float = 5.0, miss_ttl: float = 1.0) -> None:
        self.engine = engine
        self.public_url = public_url
        self.ttl = ttl
        # Short for misses: a number just added with the CLI is found within a second.
        self.miss_ttl = miss_ttl
        self._cache: dict[tuple[str, str], tuple[float, DeviceNumber | None]] = {}

    async def by_token(self, token: str) -> DeviceNumber | None:
        return await self._get("token", token)

    async def by_id(self, number_id: str) -> DeviceNumber | None:
        return await self._get("id", number_id)

    async def _get(self, field: str, value: str) -> DeviceNumber | None:
        now = time.monotonic()
        hit = self._cache.get((field, value))
        if hit is not None and hit[0] > now:
            return hit[1]
        column = _n.c.inbound_token if field == "token" else _n.c.id
        async with self.engine.connect() as conn:
            row = (await conn.execute(_NUMBER.where(column == value))).first()
        number = None
        if row is not None and row.inbound_token:
            number = DeviceNumber(
                row.id,
                row.organization_id,
                row.phone_number,
                row.transport,
                row.inbound_token,
                self.public_url,
                dict(row.transport_config or {}),
            )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(field, value)] = (now + (self.ttl if number else self.miss_ttl), number)
        return number


def callback_numbers(rt: Runtime) -> CallbackNumbers:
    found = rt.extras.get("callback_numbers")
    if found is None:
        found = rt.extras["callback_numbers"] = CallbackNumbers(rt.aengine, public_base_url(rt.settings))
    assert isinstance(found, CallbackNumbers)
    return found


def _unknown() -> ApiError:
    return ApiError(404, "not_found", "Unknown callback URL")


async def _bluebubbles_number(rt: Runtime, token: str) -> DeviceNumber:
    number = await callback_numbers(rt).by_token(token)
    if number is None or number.transport not in BLUEBUBBLES_KINDS:
        raise _unknown()
    return number


@router.post("/bluebubbles/{token}")
async def bluebubbles_webhook(token: str, request: Request, rt: Rt) -> dict[str, Any]:
    number = await _bluebubbles_number(rt, token)
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "invalid_request", "The webhook body is not JSON") from None
    event = wire.parse_event(body)
    if event is None:
        raise ApiError(400, "invalid_request", 'Expected a BlueBubbles webhook: {"type": ..., "data": ...}')
    if event.message is None:
        # typing-indicator, chat-read-status-changed, group icons …: acknowledged, not stored (yet).
        return {"ok": True, "type": event.type, "applied": False}
    applied: Applied = await rt.writer.run(apply_messages(number, [event.message], source=event.type))
    return {"ok": True, "type": event.type, "applied": bool(applied.own or applied.inbound)}


@router.get("/bluebubbles/media/{number_id}/{guid}")
async def bluebubbles_media(number_id: str, guid: str, sig: str, rt: Rt) -> StreamingResponse:
    number = await callback_numbers(rt).by_id(number_id)
    if number is None or not hmac.compare_digest(sig, media_signature(number, guid)):
        raise ApiError(404, "not_found", "Unknown attachment")
    section = number.config.get("bluebubbles") or {}
    if not section.get("url") or not section.get("password"):
        raise ApiError(404, "not_found", "Unknown attachment")
    client = BlueBubblesClient(section["url"], section["password"])
    try:
        response = await client.download_attachment(guid)
    except DeviceError:
        await client.aclose()
        raise ApiError(502, "device_error", "The device holding this attachment is not reachable") from None
    if response.status_code != 200:
        await response.aclose()
        await client.aclose()
        raise ApiError(404 if response.status_code == 404 else 502, None, "The device could not return this attachment")

    async def body() -> Any:
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        finally:
            await response.aclose()
            await client.aclose()

    headers = {k: v for k, v in response.headers.items() if k.lower() in ("content-length", "content-disposition")}
    return StreamingResponse(body(), media_type=response.headers.get("content-type"), headers=headers)


# -- Twilio ---------------------------------------------------------------------------------------------------


async def _twilio_request(rt: Runtime, token: str, request: Request) -> tuple[DeviceNumber, list[tuple[str, str]]]:
    """The number and the form fields of a Twilio request whose signature holds; else 404 / 403."""
    number = await callback_numbers(rt).by_token(token)
    section = (number.config.get("twilio") or {}) if number is not None else {}
    if number is None or number.transport not in TWILIO_KINDS or not section.get("auth_token"):
        raise _unknown()
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ApiError(413, "payload_too_large", "The callback body is too large")
    try:
        form = parse_qsl(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        form = []
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = number.public_url.rstrip("/") + request.scope["path"] + (f"?{query}" if query else "")
    if not verify_signature(str(section["auth_token"]), url, form, request.headers.get(SIGNATURE_HEADER)):
        log.warning(
            "a Twilio callback for %s had a missing or wrong signature (is OPENBLOO_PUBLIC_URL the URL Twilio calls?)",
            number.phone_number,
        )
        raise ApiError(403, "forbidden", f"Invalid {SIGNATURE_HEADER} for {url}")
    return number, form


@router.post("/twilio/{token}/status")
async def twilio_status(token: str, request: Request, rt: Rt) -> Response:
    number, form = await _twilio_request(rt, token, request)
    update = parse_status_callback(form, request.query_params.get(MESSAGE_ID_PARAM))
    if update is not None:
        await rt.writer.run(apply_status(number, update))
    return Response(status_code=204)


@router.post("/twilio/{token}/inbound")
async def twilio_inbound(token: str, request: Request, rt: Rt) -> Response:
    number, form = await _twilio_request(rt, token, request)
    message = parse_inbound(form, number.phone_number)
    if not message.sender:
        raise ApiError(400, "invalid_request", "The inbound message has no 'From'")
    await rt.writer.run(apply_inbound(number, message))
    return Response(empty_twiml(), media_type=TWIML_CONTENT_TYPE)
