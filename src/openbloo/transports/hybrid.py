"""Hybrid numbers: iMessage through a Mac running BlueBubbles first, SMS through Twilio when iMessage cannot.

One number, two devices: a :class:`~openbloo.transports.bluebubbles.transport.BlueBubblesTransport` and a
:class:`~openbloo.transports.twilio.transport.TwilioTransport`, built from the number's two configuration
sections. For each message to one phone number:

1. **Which way.** BlueBubbles is asked whether the handle is on iMessage (``GET /handle/availability/imessage``,
   a Private API call). The answer is kept for ``imessage_cache_seconds`` (default an hour). Without an answer
   (the Private API is off, the helper does not answer) the handle counts as unknown and iMessage is tried.
   E-mail handles and groups always go by iMessage: SMS cannot reach them.
2. **Send.** By iMessage, or by SMS (the effect is dropped: SMS has no animation). If Messages on the Mac
   fails the iMessage send with error 22 (the recipient is not on iMessage), the same message goes by SMS
   at once, once, and the handle is remembered as SMS-only. The receipt's ``protocol`` (``imessage`` or
   ``sms``) is what the message shows.
3. **After a crash** (:meth:`HybridTransport.find_sent`): the side the unfinished attempt used is asked (both
   when this process does not know: a restart), an iMessage attempt that Messages failed with error 22 counting
   as not sent.

While the Mac is unreachable, messages to iMessage (and unknown) handles wait for it (they stay ``queued``);
handles known to be SMS-only still go. The number's health joins both sides: ``online`` when both are,
``offline`` when neither can be reached, else ``degraded``; ``device_info`` holds the Mac's details (the
send rules read its ``private_api``) plus ``imessage`` / ``sms`` (each side's status) and ``twilio``.
BlueBubbles' webhooks and Twilio's callbacks both reach the number's callback routes; the reconciler polls
the Mac through :attr:`HybridTransport.bluebubbles`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from openbloo.ids import now_ms
from openbloo.transports.base import (
    DeviceCheck,
    DeviceHealth,
    EventSink,
    InboundMessage,
    Outgoing,
    Receipt,
    StatusUpdate,
    Transport,
    TransportError,
)
from openbloo.transports.bluebubbles import wire
from openbloo.transports.bluebubbles.client import DeviceError
from openbloo.transports.bluebubbles.sending import MessagesError
from openbloo.transports.bluebubbles.transport import BlueBubblesTransport
from openbloo.transports.twilio.transport import TwilioTransport

if TYPE_CHECKING:
    from openbloo.config import Settings
    from openbloo.transports.registry import NumberDevice

log = logging.getLogger("openbloo.hybrid")

IMESSAGE, SMS = "imessage", "sms"
MAX_CACHED_HANDLES = 50_000
MAX_REMEMBERED_SIDES = 10_000


class _Side(EventSink):
    """The sink one side is started with: news passes through, health is joined with the other side's."""

    def __init__(self, owner: HybridTransport, side: str) -> None:
        self.owner = owner
        self.side = side

    async def status(self, update: StatusUpdate) -> None:
        await self.owner.sink_or_fail().status(update)

    async def statuses(self, updates: list[StatusUpdate]) -> None:
        await self.owner.sink_or_fail().statuses(updates)

    async def inbound(self, message: InboundMessage) -> None:
        await self.owner.sink_or_fail().inbound(message)

    async def device(self, health: DeviceHealth) -> None:
        await self.owner.side_health(self.side, health)


def joined_status(imessage: str, sms: str) -> str:
    if imessage == sms == "online":
        return "online"
    if imessage == sms == "offline":
        return "offline"
    return "degraded"


class HybridTransport(Transport):
    kind = "hybrid"
    capabilities = BlueBubblesTransport.capabilities | TwilioTransport.capabilities
    can_find_sent = True

    def __init__(
        self,
        number_id: str,
        bluebubbles: BlueBubblesTransport,
        twilio: TwilioTransport,
        *,
        cache_seconds: float = 3600.0,
    ) -> None:
        self.number_id = number_id
        self.bluebubbles = bluebubbles  # the reconciler polls the Mac through this
        self.twilio = twilio
        self.cache_seconds = cache_seconds
        self._routes: dict[str, tuple[str, float]] = {}  # handle → (imessage | sms, monotonic expiry)
        self._sides: dict[str, str] = {}  # transport_ref → the side its last attempt used (this process)
        self._health: dict[str, DeviceHealth] = {}
        self._sink: EventSink | None = None

    @classmethod
    def from_device(cls, device: NumberDevice, settings: Settings) -> HybridTransport:
        return cls(
            device.number_id,
            BlueBubblesTransport.from_device(device, settings),
            TwilioTransport.from_device(device, settings),
            cache_seconds=settings.imessage_cache_seconds,
        )

    def sink_or_fail(self) -> EventSink:
        assert self._sink is not None, "hybrid transport not started"
        return self._sink

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self, sink: EventSink) -> None:
        self._sink = sink
        await self.bluebubbles.start(_Side(self, IMESSAGE))
        await self.twilio.start(_Side(self, SMS))

    async def close(self) -> None:
        try:
            await self.bluebubbles.close()
        finally:
            await self.twilio.close()

    # -- which way ------------------------------------------------------------------------------------------
    def cached_route(self, handle: str) -> str | None:
        hit = self._routes.get(handle)
        if hit is None or hit[1] <= time.monotonic():
            return None
        return hit[0]

    def remember(self, handle: str, route: str) -> None:
        if len(self._routes) >= MAX_CACHED_HANDLES:
            self._routes.clear()
        self._routes[handle] = (route, time.monotonic() + self.cache_seconds)

    async def route(self, handle: str) -> str | None:
        """``imessage`` / ``sms`` for a phone handle, or None when BlueBubbles cannot say (try iMessage)."""
        cached = self.cached_route(handle)
        if cached is not None:
            return cached
        if self.bluebubbles.private_api is False:
            return None  # the availability check is a Private API call
        try:
            available = await self.bluebubbles.client.imessage_available(handle)
        except DeviceError as exc:
            log.info("iMessage availability of %s unknown (%s); trying iMessage", handle, exc.kind)
            return None
        route = IMESSAGE if available else SMS
        self.remember(handle, route)
        return route

    @staticmethod
    def sms_possible(message: Outgoing) -> bool:
        """One phone number: the only kind of recipient Twilio can reach."""
        return not message.is_group and len(message.recipients) == 1 and message.recipients[0].startswith("+")

    # -- sending --------------------------------------------------------------------------------------------
    def _used(self, message: Outgoing, side: str) -> None:
        if len(self._sides) >= MAX_REMEMBERED_SIDES:
            self._sides.clear()
        self._sides[message.transport_ref] = side

    async def _by_imessage(self, message: Outgoing) -> Receipt:
        self._used(message, IMESSAGE)
        return await self.bluebubbles.send(message)

    async def _by_sms(self, message: Outgoing) -> Receipt:
        self._used(message, SMS)
        return await self.twilio.send(replace(message, effect=None))

    async def send(self, message: Outgoing) -> Receipt:
        if not self.sms_possible(message):
            return await self._by_imessage(message)
        handle = message.recipients[0]
        route = await self.route(handle)
        if route == SMS:
            return await self._by_sms(message)
        try:
            # BlueBubbles need not ask again when it opens a chat with a handle it just said is on iMessage.
            known = replace(message, options={**message.options, "service": "iMessage"}) if route else message
            receipt = await self._by_imessage(known)
        except MessagesError as exc:
            if not await self._not_on_imessage(message, exc):
                raise
            log.info("%s is not on iMessage (error 22): sending message %s by SMS", handle, message.message_id)
            self.remember(handle, SMS)
            return await self._by_sms(message)
        if self.cached_route(handle) is None:
            self.remember(handle, IMESSAGE)
        return receipt

    async def _not_on_imessage(self, message: Outgoing, exc: MessagesError) -> bool:
        """Whether Messages failed the iMessage attempt with error 22. The server's answer rarely says which
        error it was; the failed message on the Mac does."""
        if exc.messages_error:
            return exc.messages_error == wire.NOT_ON_IMESSAGE
        try:
            dm = await self.bluebubbles.find_device_message(message)
        except TransportError:
            return False
        return dm is not None and dm.error == wire.NOT_ON_IMESSAGE

    async def find_sent(self, message: Outgoing) -> Receipt | None:
        side = self._sides.get(message.transport_ref)
        if side != SMS:
            try:
                dm = await self.bluebubbles.find_device_message(message)
            except TransportError:
                # The Mac cannot be asked; if the attempt went by SMS, Twilio can tell without it.
                found = await self.twilio.find_sent(message) if side is None and self.sms_possible(message) else None
                if found is not None:
                    return found
                raise
            if dm is not None and not dm.error:
                return Receipt(dm.guid, dm.protocol, dm.date_created or now_ms(), dm.chat.guid if dm.chat else None)
            if dm is not None and dm.error != wire.NOT_ON_IMESSAGE:
                return None  # Messages failed it; nothing went out
        if side != IMESSAGE and self.sms_possible(message):
            return await self.twilio.find_sent(message)
        return None

    async def resume(self, message: Outgoing, receipt: Receipt) -> None:
        if receipt.protocol == SMS and receipt.provider_id and receipt.provider_id[:2] in ("SM", "MM"):
            await self.twilio.resume(message, receipt)
        else:
            await self.bluebubbles.resume(message, receipt)

    # -- health ---------------------------------------------------------------------------------------------
    async def side_health(self, side: str, health: DeviceHealth) -> None:
        self._health[side] = health
        imessage, sms = self._health.get(IMESSAGE), self._health.get(SMS)
        if imessage is None or sms is None or self._sink is None:
            return  # report once both sides have been heard from
        info: dict[str, Any] = {
            **imessage.info,
            IMESSAGE: imessage.status,
            SMS: sms.status,
            "twilio": dict(sms.info),
        }
        seen = [t for t in (imessage.last_seen, sms.last_seen) if t is not None]
        joined = DeviceHealth(self.number_id, joined_status(imessage.status, sms.status), max(seen, default=None), info)
        try:
            await self._sink.device(joined)
        except Exception:
            log.exception("could not record the health of hybrid number %s", self.number_id)

    async def check(self) -> DeviceCheck:
        imessage = await self.bluebubbles.check()
        sms = await self.twilio.check()
        details = (
            *(f"iMessage (BlueBubbles): {line}" for line in imessage.details),
            *(f"SMS (Twilio): {line}" for line in sms.details),
        )
        return DeviceCheck(
            imessage.reachable and sms.reachable,
            imessage.credentials_ok and sms.credentials_ok,
            details,
            {**imessage.info, "twilio": dict(sms.info)},
        )
