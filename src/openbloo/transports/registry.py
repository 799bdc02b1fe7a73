"""Which transport serves which number: one per configured device, built from the numbers' rows.

Every simulator number shares the one in-process simulator. Every other number gets a transport of its own,
made by the factory of its kind (:data:`FACTORIES`) from a :class:`NumberDevice` (the number's stored
configuration, callback token and public base URL). The registry re-reads the numbers every
``registry_refresh_seconds``, so a number added or reconfigured with the CLI while ``serve`` runs starts
working without a restart: new numbers get a transport, changed ones a fresh one, removed ones are closed.

A kind with no factory (or a number whose configuration is incomplete) has no transport: the dispatcher
keeps its messages queued (transient ``device_unavailable``) until one appears or their retries run out.
Transports report their device's health through the sink they were started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select

from openbloo.config import Settings, public_base_url, simulator_state_path
from openbloo.db import models as m
from openbloo.transports.base import EventSink, ProviderIdOwner, Transport
from openbloo.transports.config import callback_urls
from openbloo.transports.simulator import SimulatorTransport

if TYPE_CHECKING:
    from openbloo.runtime import Runtime

log = logging.getLogger("openbloo.transports")


@dataclass(frozen=True, slots=True)
class NumberDevice:
    """One number's device, as a transport factory receives it."""

    number_id: str
    organization_id: str
    phone_number: str
    kind: str  # numbers.transport
    config: dict[str, Any]  # numbers.transport_config: {"bluebubbles": {...}, "twilio": {...}}
    inbound_token: str | None
    public_url: str  # where the device reaches openbloo (OPENBLOO_PUBLIC_URL or http://HOST:PORT)
    device_info: dict[str, Any] | None = None  # last known health details (numbers.device_info)
    # Which stored message holds a provider id (for crash searches): a read the registry supplies through the
    # runtime, so transports still never touch the database. None where nothing is stored (numbers check).
    claimed: ProviderIdOwner | None = field(default=None, compare=False, repr=False)

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.config.get(name) or {})

    @property
    def callback_urls(self) -> dict[str, str]:
        """``bluebubbles`` (webhook URL), ``twilio`` (inbound), ``twilio_status``: the ones that apply."""
        return callback_urls(self.kind, self.inbound_token, self.public_url)

    @property
    def fingerprint(self) -> str:
        """Changes when anything a transport was built from changes (then it is rebuilt)."""
        return json.dumps([self.kind, self.config, self.inbound_token, self.public_url], sort_keys=True)


# ``factory(device, settings) -> Transport``: must not do I/O (that belongs in ``Transport.start``), and
# raises TransportUnavailable (or ValueError) if the device's configuration cannot work.
TransportFactory = Callable[[NumberDevice, Settings], Transport]


class TransportUnavailable(Exception):
    """No transport can be built for this number (unknown kind or incomplete configuration)."""


def _bluebubbles(device: NumberDevice, settings: Settings) -> Transport:
    from openbloo.transports.bluebubbles.transport import BlueBubblesTransport

    return BlueBubblesTransport.from_device(device, settings)


def _twilio(device: NumberDevice, settings: Settings) -> Transport:
    from openbloo.transports.twilio.transport import TwilioTransport

    return TwilioTransport.from_device(device, settings)


def _hybrid(device: NumberDevice, settings: Settings) -> Transport:
    from openbloo.transports.hybrid import HybridTransport

    return HybridTransport.from_device(device, settings)


# One factory per kind.
FACTORIES: dict[str, TransportFactory] = {"bluebubbles": _bluebubbles, "twilio": _twilio, "hybrid": _hybrid}


def device_for_row(row: Any, public_url: str) -> NumberDevice:
    return NumberDevice(
        number_id=row.id,
        organization_id=row.organization_id,
        phone_number=row.phone_number,
        kind=row.transport,
        config=dict(row.transport_config or {}),
        inbound_token=row.inbound_token,
        public_url=public_url,
        device_info=row.device_info,
    )


def build_transport(device: NumberDevice, settings: Settings) -> Transport:
    """A fresh, unstarted transport for ``device`` (the registry's and ``openbloo numbers check``'s way in)."""
    if device.kind == "simulator":
        return SimulatorTransport(simulator_state_path(settings))
    factory = FACTORIES.get(device.kind)
    if factory is None:
        raise TransportUnavailable(
            f"openbloo cannot send through {device.kind} numbers yet: messages from {device.phone_number} stay queued"
        )
    try:
        return factory(device, settings)
    except ValueError as exc:
        raise TransportUnavailable(f"{device.phone_number} ({device.kind}): {exc}") from None


_DEVICE_NUMBERS = select(
    m.numbers.c.id,
    m.numbers.c.organization_id,
    m.numbers.c.phone_number,
    m.numbers.c.transport,
    m.numbers.c.transport_config,
    m.numbers.c.inbound_token,
    m.numbers.c.device_info,
).where(m.numbers.c.transport != "simulator")


_PROVIDER_ID_OWNER = (
    select(m.messages.c.id)
    .where(m.messages.c.number_id == bindparam("number"), m.messages.c.provider_id == bindparam("provider_id"))
    .limit(1)
)


class TransportRegistry:
    def __init__(self, runtime: Runtime) -> None:
        s = runtime.settings
        self.runtime = runtime
        # One simulated device serves every simulator number of this database.
        self.simulator = SimulatorTransport(
            simulator_state_path(s), delivery_ms=s.simulator_delivery_ms, read_ms=s.simulator_read_ms
        )
        self._started: list[Transport] = []
        self._devices: dict[str, tuple[NumberDevice, Transport]] = {}
        self._unavailable: dict[str, str] = {}  # number id → fingerprint already reported as unusable
        self._sink: EventSink | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, sink: EventSink) -> None:
        self._sink = sink
        await self.simulator.start(sink)
        self._started.append(self.simulator)
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="transport-registry")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for _device, transport in self._devices.values():
            await self._close(transport)
        self._devices.clear()
        for transport in self._started:
            await self._close(transport)
        self._started.clear()

    def for_number(self, number_id: str, kind: str) -> Transport | None:
        """The transport of a number, or None while its device is not available (the job stays queued)."""
        if kind == "simulator":
            return self.simulator
        entry = self._devices.get(number_id)
        return entry[1] if entry is not None else None

    def devices(self, kind: str | None = None) -> list[tuple[NumberDevice, Transport]]:
        """The running device transports (of one kind), for the workers that poll devices."""
        return [entry for entry in self._devices.values() if kind is None or entry[0].kind == kind]

    def resumable_kinds(self) -> tuple[str, ...]:
        # Transports whose ``resume`` re-learns the fate of a message left ``sent`` across a restart: the
        # simulator re-arms its receipts, Twilio (and the SMS side of hybrid) fetches the message once, since
        # Twilio does not send a status callback again. BlueBubbles' reconciler re-checks its own.
        return ("simulator", "twilio", "hybrid")

    # -- keeping up with the numbers table -----------------------------------------------------------------
    async def refresh(self) -> None:
        """Bring the running transports in line with the stored numbers."""
        public = public_base_url(self.runtime.settings)
        async with self.runtime.aengine.connect() as conn:
            rows = (await conn.execute(_DEVICE_NUMBERS)).all()
        wanted = {row.id: device_for_row(row, public) for row in rows}
        for number_id in list(self._devices):
            device, transport = self._devices[number_id]
            new = wanted.get(number_id)
            if new is None or new.fingerprint != device.fingerprint:
                del self._devices[number_id]
                await self._close(transport)
        for number_id, device in wanted.items():
            if number_id in self._devices or self._unavailable.get(number_id) == device.fingerprint:
                continue
            try:
                with_lookup = replace(device, claimed=self._owner_lookup(number_id))
                transport = build_transport(with_lookup, self.runtime.settings)
            except TransportUnavailable as exc:
                self._unavailable[number_id] = device.fingerprint
                log.warning("%s", exc)
                continue
            self._unavailable.pop(number_id, None)
            assert self._sink is not None, "registry not started"
            await transport.start(self._sink)
            self._devices[number_id] = (device, transport)
            log.info("%s device for %s started", device.kind, device.phone_number)

    def _owner_lookup(self, number_id: str) -> ProviderIdOwner:
        engine = self.runtime.aengine

        async def owner(provider_id: str) -> str | None:
            async with engine.connect() as conn:
                found = await conn.scalar(_PROVIDER_ID_OWNER, {"number": number_id, "provider_id": provider_id})
            return str(found) if found is not None else None

        return owner

    async def _refresh_loop(self) -> None:
        interval = max(0.05, self.runtime.settings.registry_refresh_seconds)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("refreshing the device transports failed; trying again")

    @staticmethod
    async def _close(transport: Transport) -> None:
        try:
            await transport.close()
        except Exception:
            log.exception("closing %s failed", transport.kind)
