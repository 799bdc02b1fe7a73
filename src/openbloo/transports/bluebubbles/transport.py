"""iMessage through a Mac running BlueBubbles Server: sending, the exactly-once search, device health.

What comes back from the device (webhooks, the reconciler's polls) is applied to the database elsewhere
(:mod:`openbloo.devices.bluebubbles`); this class only talks to the server.

Sending: a 1:1 chat or group the device already has (its GUID is stored, or found by asking the server
for each GUID spelling) gets ``message/text``, ``message/attachment`` or ``message/multipart``; a first
message to a handle or an unnamed group gets ``chat/new``, and the new chat's GUID comes back in the
receipt to be stored. Every request carries a ``tempGuid`` derived from the job. The ``method`` is
``private-api`` when the device's Private API is on and its helper connected, else ``apple-script``.

Which failures are retried (see :meth:`_failure`): no connection, a refused password, a disconnected
Private API helper, timeouts and unexplained 500s are transient, the last two marked ``maybe_sent`` because
the server may have created the message before failing, so the dispatcher searches before re-sending. A
400 and the "message sent with an error" 500 (the row exists in Messages with an error code, so a re-send
would be a second message) are permanent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from openbloo.config import Settings
from openbloo.ids import now_ms
from openbloo.transports.base import (
    Capability,
    DeviceCheck,
    DeviceHealth,
    EventSink,
    Outgoing,
    PermanentError,
    Receipt,
    TransientError,
    Transport,
    TransportError,
)
from openbloo.transports.bluebubbles import sending, wire
from openbloo.transports.bluebubbles.client import BlueBubblesClient, DeviceError
from openbloo.transports.registry import NumberDevice

log = logging.getLogger("openbloo.bluebubbles")

# How far before an unfinished attempt's start a crash search looks: covers the Mac's clock being a little
# behind ours. Earlier messages of the conversation were recorded before the attempt began.
CLOCK_MARGIN_MS = 5_000
QUERY_PAGE = 500
QUERY_PAGES = 10
WITH_CHATS = ["chats", "chats.participants", "attachments"]


class BlueBubblesTransport(Transport):
    kind = "bluebubbles"
    capabilities = frozenset(
        {
            Capability.IMESSAGE,
            Capability.SMS,
            Capability.EFFECTS,
            Capability.REPLIES,
            Capability.REACTIONS,
            Capability.TYPING,
            Capability.READ_RECEIPTS,
            Capability.GROUP_CREATE,
            Capability.ATTACHMENTS,
        }
    )
    can_find_sent = True

    def __init__(self, device: NumberDevice, client: BlueBubblesClient, *, check_interval: float = 15.0) -> None:
        self.device = device
        self.client = client
        self.check_interval = check_interval
        self.webhook_url = device.callback_urls.get("bluebubbles")
        info = device.device_info or {}
        self.info: dict[str, Any] = {k: v for k, v in info.items() if k != "error"}
        self.status: str | None = None
        self.last_seen: int | None = None
        self._sink: EventSink | None = None
        self._health: asyncio.Task[None] | None = None
        self._webhook_ok = False

    @classmethod
    def from_device(cls, device: NumberDevice, settings: Settings) -> BlueBubblesTransport:
        section = device.section("bluebubbles")
        if not section.get("url") or not section.get("password"):
            raise ValueError("a BlueBubbles number needs a server URL and password (openbloo numbers set)")
        client = BlueBubblesClient(section["url"], section["password"])
        return cls(device, client, check_interval=settings.device_check_interval)

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self, sink: EventSink) -> None:
        self._sink = sink
        self._health = asyncio.create_task(self._health_loop(), name=f"bluebubbles-{self.device.phone_number}")

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        await self.client.aclose()

    @property
    def private_api(self) -> bool | None:
        """Whether Private API features can be used now: None while unknown."""
        if "private_api" not in self.info:
            return None
        return bool(self.info.get("private_api")) and bool(self.info.get("helper_connected"))

    # -- sending --------------------------------------------------------------------------------------------
    async def send(self, message: Outgoing) -> Receipt:
        try:
            receipt = await sending.send(self, message)
        except DeviceError as exc:
            raise await self._failure(exc) from None
        await self._seen()
        return receipt

    async def find_sent(self, message: Outgoing) -> Receipt | None:
        """Did an unfinished attempt reach the device? Search the chat's own messages since it began.

        Matched on the ``tempGuid`` where the server reports it, else on "sent by us, same text" (the server
        forgets ``tempGuid`` once a send finishes, and its query results never carry it).
        """
        dm = await self.find_device_message(message)
        if dm is None:
            return None
        log.info("message %s was already on the device as %s: not sending it again", message.message_id, dm.guid)
        return Receipt(dm.guid, dm.protocol, dm.date_created or now_ms(), dm.chat.guid if dm.chat else None)

    async def find_device_message(self, message: Outgoing) -> wire.DeviceMessage | None:
        """The device's own record of ``message`` (with its ``error``, if Messages failed it), or None."""
        since = max(message.time_accepted, message.in_flight_since or 0) - CLOCK_MARGIN_MS
        body: dict[str, Any] = {"after": since, "sort": "ASC", "with": WITH_CHATS, "limit": QUERY_PAGE}
        if message.chat_guid:
            body["chatGuid"] = message.chat_guid
        try:
            found = [wire.parse_message(d) for d in await self.client.query_messages(body)]
        except DeviceError as exc:
            raise await self._failure(exc) from None
        temp = wire.temp_guid(message.transport_ref)
        expected = sending.expected_text(message)
        for dm in found:
            if dm is None or not dm.is_from_me or not self._same_chat(message, dm):
                continue
            if dm.temp_guid == temp or (expected is not None and wire.same_text(dm.text, expected)):
                return dm
        return None

    @staticmethod
    def _same_chat(message: Outgoing, dm: wire.DeviceMessage) -> bool:
        if dm.chat is None:
            return message.chat_guid is not None  # the query was already restricted to the chat
        if message.chat_guid:
            return wire.chat_identity(dm.chat.guid) == wire.chat_identity(message.chat_guid)
        if message.is_group:
            return dm.chat.is_group and set(dm.chat.participants) == set(message.recipients)
        return not dm.chat.is_group and dm.chat.identifier == message.recipients[0]

    async def _failure(self, exc: DeviceError) -> TransportError:
        """Map a device error to the transport error tree (the module docstring says why each way)."""
        text = exc.text
        if exc.kind == "unreachable":
            await self._offline(str(exc))
            return TransientError(f"BlueBubbles server unreachable: {exc}", code="device_unavailable")
        if exc.kind == "timeout":
            return TransientError(f"BlueBubbles server did not answer: {exc}", code="device_timeout", maybe_sent=True)
        if exc.status in (401, 403):
            await self._offline("the server refused the password")
            return TransientError("BlueBubbles server refused the password", code="device_auth_failed")
        refusal = wire.private_api_refusal(text)
        if refusal is not None:
            enabled = refusal == "disconnected"
            self.info.update({"private_api": enabled, "helper_connected": False})
            await self._report()
            if enabled:
                return TransientError("The BlueBubbles Private API helper is not connected", code="device_degraded")
            return PermanentError("The BlueBubbles Private API is not enabled on the Mac", code="private_api_disabled")
        if exc.status == 400:
            if "already queued" in text:
                return TransientError(f"BlueBubbles: {text}", code="device_busy", maybe_sent=True)
            return PermanentError(
                f"BlueBubbles refused the message: {exc.detail or exc.summary}", code="device_rejected"
            )
        if "sent with an error" in text or sending.error_of(exc.data):
            return sending.MessagesError(sending.error_of(exc.data))
        if "Cannot create group chats" in text or "is required" in text:
            return PermanentError(f"BlueBubbles: {exc.detail or exc.summary}", code="device_rejected")
        return TransientError(f"BlueBubbles error: {exc}", code="device_error", maybe_sent=True)

    # -- what the reconciler reads ----------------------------------------------------------------------------
    async def messages_since(self, after_ms: int) -> list[wire.DeviceMessage]:
        """Every message created at or after ``after_ms`` (both directions), oldest first."""
        out: list[wire.DeviceMessage] = []
        for page in range(QUERY_PAGES):
            body = {
                "after": after_ms,
                "sort": "ASC",
                "with": WITH_CHATS,
                "limit": QUERY_PAGE,
                "offset": page * QUERY_PAGE,
            }
            rows = await self.client.query_messages(body)
            out.extend(dm for dm in map(wire.parse_message, rows) if dm is not None)
            if len(rows) < QUERY_PAGE:
                break
        return out

    async def message(self, guid: str) -> wire.DeviceMessage | None:
        return wire.parse_message(await self.client.message(guid))

    # -- health -----------------------------------------------------------------------------------------------
    async def check(self) -> DeviceCheck:
        url = self.device.section("bluebubbles").get("url", "")
        try:
            await self.client.ping()
            info = await self.client.server_info()
        except DeviceError as exc:
            if exc.kind == "refused" and exc.status in (401, 403):
                return DeviceCheck(True, False, (f"Reached {url}, but the server refused the password.",))
            if exc.kind == "refused":
                return DeviceCheck(True, False, (f"Reached {url}, but it answered {exc}; is this BlueBubbles Server?",))
            return DeviceCheck(False, False, (f"Cannot reach BlueBubbles Server at {url} ({exc}).",))
        details = [
            f"Reached BlueBubbles Server {info.get('server_version') or '(unknown version)'} on macOS "
            f"{info.get('os_version') or '(unknown)'} at {url}; the password is accepted.",
            sending.private_api_words(info),
        ]
        if info.get("detected_imessage"):
            details.append(f"Signed in to iMessage as {info['detected_imessage']}.")
        if self.webhook_url:
            try:
                registered = bool(await self.client.webhooks(self.webhook_url))
            except DeviceError:
                registered = False
            details.append(
                f"Webhook to openbloo ({self.webhook_url}): "
                + ("registered." if registered else "not registered yet; openbloo registers it when it runs.")
            )
        return DeviceCheck(True, True, tuple(details), sending.device_info(info))

    async def probe(self) -> DeviceHealth:
        """One health check: ping, server info, and the webhook registration kept in place."""
        try:
            await self.client.ping()
            info = await self.client.server_info()
        except DeviceError as exc:
            reason = "the server refused the password" if exc.status in (401, 403) else str(exc)
            await self._offline(reason)
            return self._health_now()
        self.info = sending.device_info(info)
        await self._seen()
        if self.webhook_url and not self._webhook_ok:
            await self._ensure_webhook(self.webhook_url)
        return self._health_now()

    async def _ensure_webhook(self, url: str) -> None:
        try:
            existing = await self.client.webhooks(url)
            wanted = set(wire.WEBHOOK_EVENTS)
            if existing and not (
                wanted <= set(existing[0].get("events") or ()) or "*" in existing[0].get("events", ())
            ):
                await self.client.delete_webhook(existing[0].get("id"))
                existing = []
            if not existing:
                await self.client.add_webhook(url, list(wire.WEBHOOK_EVENTS))
                log.info("registered the BlueBubbles webhook for %s", self.device.phone_number)
            self._webhook_ok = True
        except DeviceError as exc:
            log.warning("could not register the BlueBubbles webhook for %s: %s", self.device.phone_number, exc)

    async def _health_loop(self) -> None:
        checks = 0
        while True:
            try:
                # Re-check the webhook now and then: someone may have removed it in the server's settings.
                if checks % 20 == 0:
                    self._webhook_ok = False
                await self.probe()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health check of %s failed", self.device.phone_number)
            checks += 1
            await asyncio.sleep(self.check_interval)

    def _health_now(self) -> DeviceHealth:
        return DeviceHealth(self.device.number_id, self.status or "offline", self.last_seen, dict(self.info))

    async def _seen(self) -> None:
        self.last_seen = now_ms()
        was = self.status
        self.status = "online" if self.private_api else "degraded"
        self.info.pop("error", None)
        if was == "offline":
            self._webhook_ok = False  # the server may have restarted without our webhook
        await self._report()

    async def _offline(self, reason: str) -> None:
        self.status = "offline"
        self.info["error"] = reason
        self._webhook_ok = False
        await self._report()

    async def _report(self) -> None:
        if self._sink is not None:
            try:
                await self._sink.device(self._health_now())
            except Exception:
                log.exception("could not record the health of %s", self.device.phone_number)
