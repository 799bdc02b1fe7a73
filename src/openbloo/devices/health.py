"""Device health into ``numbers.device_*``: what ``/me`` shows and what the send planner checks.

Transports report health on every check (every few seconds); writing each report would cost a commit per
device per check for nothing. :class:`HealthRecorder` writes when the status or the details change, and
otherwise refreshes ``device_last_seen`` at most every :data:`LAST_SEEN_EVERY_MS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, update

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.db.writer import Writer
from openbloo.transports.base import DeviceHealth

LAST_SEEN_EVERY_MS = 10_000

_n = m.numbers


def save_device_health(health: DeviceHealth) -> Callable[[Batch], None]:
    def unit(batch: Batch) -> None:
        batch.conn.execute(
            update(_n)
            .where(_n.c.id == health.number_id)
            .values(
                device_status=health.status,
                device_last_seen=func.coalesce(health.last_seen, _n.c.device_last_seen),
                device_info=health.info,
            )
        )

    return unit


class HealthRecorder:
    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._written: dict[str, tuple[str, dict[str, Any], int | None]] = {}

    async def record(self, health: DeviceHealth) -> bool:
        """Store ``health`` if it tells something new; returns whether it was written."""
        last = self._written.get(health.number_id)
        if last is not None and last[0] == health.status and last[1] == health.info:
            fresh = health.last_seen is None or (
                last[2] is not None and health.last_seen - last[2] < LAST_SEEN_EVERY_MS
            )
            if fresh:
                return False
        await self.writer.run(save_device_health(health))
        self._written[health.number_id] = (health.status, dict(health.info), health.last_seen)
        return True
