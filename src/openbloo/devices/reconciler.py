"""Nothing missed: BlueBubbles neither retries nor replays webhooks, so the workers poll for what they lost.

At start-up and then every ``reconcile_interval`` seconds, for every BlueBubbles server the registry runs:

1. ``message/query`` from the number's stored cursor (``numbers.sync_cursor``, minus an overlap for rows
   that reach the Mac's database a little after their creation time) → applied exactly like webhooks, so
   inbound messages the webhooks missed appear and those they delivered change nothing;
2. ``message/query`` finds messages by creation time only, so delivery and read receipts for older
   messages are read again by GUID for every recent message still ``sent``;
3. the cursor moves to the newest creation time seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from openbloo.devices.bluebubbles import DeviceNumber, apply_messages, save_cursor, sync_state
from openbloo.ids import now_ms
from openbloo.runtime import Runtime
from openbloo.transports.bluebubbles.client import DeviceError
from openbloo.transports.bluebubbles.transport import BlueBubblesTransport
from openbloo.transports.registry import NumberDevice, TransportRegistry

log = logging.getLogger("openbloo.reconciler")

OVERLAP_MS = 60_000
RECHECK_CONCURRENCY = 8
# A hybrid number's SMS go through Twilio: their ids are MessageSids, which the Mac has never heard of.
TWILIO_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")


def bluebubbles_of(transport: Any) -> BlueBubblesTransport | None:
    """The BlueBubbles side of a transport (a hybrid transport exposes its own as ``.bluebubbles``)."""
    if isinstance(transport, BlueBubblesTransport):
        return transport
    inner = getattr(transport, "bluebubbles", None)
    return inner if isinstance(inner, BlueBubblesTransport) else None


def device_number(device: NumberDevice) -> DeviceNumber:
    return DeviceNumber(
        device.number_id,
        device.organization_id,
        device.phone_number,
        device.kind,
        device.inbound_token,
        device.public_url,
        device.config,
    )


class Reconciler:
    def __init__(self, runtime: Runtime, registry: TransportRegistry) -> None:
        self.runtime = runtime
        self.registry = registry
        self.interval = max(0.05, runtime.settings.reconcile_interval)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bluebubbles-reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(self.interval)

    async def run_once(self) -> int:
        """One pass over every BlueBubbles server; returns how many messages changed."""
        changed = 0
        for device, transport in self.registry.devices():
            bb = bluebubbles_of(transport)
            if bb is None:
                continue
            try:
                changed += await self.reconcile(device_number(device), bb)
            except asyncio.CancelledError:
                raise
            except DeviceError as exc:
                log.info("reconciling %s skipped: %s", device.phone_number, exc)
            except Exception:
                log.exception("reconciling %s failed", device.phone_number)
        return changed

    async def reconcile(self, number: DeviceNumber, transport: BlueBubblesTransport) -> int:
        writer = self.runtime.writer
        cursor, sent_guids = await writer.run(sync_state(number.id, now_ms()))
        if number.transport == "hybrid":
            sent_guids = [g for g in sent_guids if not TWILIO_SID.match(g)]
        found = await transport.messages_since(max(0, cursor - OVERLAP_MS))
        changed = 0
        if found:
            applied = await writer.run(apply_messages(number, found, source="query"))
            changed += applied.inbound
        # Recent messages of ours still "sent": their receipts may have been missed.
        seen = {dm.guid for dm in found}
        limit = asyncio.Semaphore(RECHECK_CONCURRENCY)

        async def fetch(guid: str) -> Any:
            async with limit:
                return await transport.message(guid)

        fetched = await asyncio.gather(*(fetch(g) for g in sent_guids if g not in seen), return_exceptions=True)
        updates = [dm for dm in fetched if dm is not None and not isinstance(dm, BaseException)]
        if updates:
            applied = await writer.run(apply_messages(number, updates, source="updated-message"))
            changed += applied.own
        newest = max((dm.date_created for dm in found), default=0)
        if newest > cursor:
            await writer.run(save_cursor(number.id, newest))
        return changed
