"""Which transport serves which number: built from the numbers' configuration, started once per process."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from openbloo.config import simulator_state_path
from openbloo.transports.base import EventSink, Transport
from openbloo.transports.simulator import SimulatorTransport

if TYPE_CHECKING:
    from openbloo.runtime import Runtime

log = logging.getLogger("openbloo.transports")


class TransportRegistry:
    def __init__(self, runtime: Runtime) -> None:
        s = runtime.settings
        self.runtime = runtime
        # One simulated device serves every simulator number of this database.
        self.simulator = SimulatorTransport(
            simulator_state_path(s), delivery_ms=s.simulator_delivery_ms, read_ms=s.simulator_read_ms
        )
        self._started: list[Transport] = []

    async def start(self, sink: EventSink) -> None:
        await self.simulator.start(sink)
        self._started.append(self.simulator)

    async def close(self) -> None:
        for transport in self._started:
            try:
                await transport.close()
            except Exception:
                log.exception("closing %s failed", transport.kind)
        self._started.clear()

    def for_number(self, number_id: str, kind: str) -> Transport | None:
        """The transport of a number, or None while its device is not available (the job stays queued)."""
        if kind == "simulator":
            return self.simulator
        return None

    def resumable_kinds(self) -> tuple[str, ...]:
        return ("simulator",)
