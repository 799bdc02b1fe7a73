"""Wake-ups across processes on PostgreSQL: NOTIFY from the committing transaction, LISTEN where workers run.

Within one process the writer wakes the dispatcher and the webhook sender after a commit (in-process
listeners). An API process on PostgreSQL runs no workers, so the worker process learned of its jobs only by
polling (every 0.25 s): at light load a message waited about half a poll before it was claimed. A batch
that queues delivery jobs or webhook deliveries now also NOTIFYs a channel inside its own transaction
(``Batch.signal``; PostgreSQL delivers a notification at commit, once per channel per transaction, and
never for a rolled-back one), and every process that runs workers LISTENs on a connection of its own and
wakes them. Polling stays: it finds retries that come due, and covers the moments the listening
connection is down. SQLite has no such channel; there a worker process beside the API still polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.engine import make_url

log = logging.getLogger("openbloo.wakeups")

# Delivery jobs were queued (the dispatcher claims them).
JOBS = "openbloo_jobs"
# Webhook deliveries were queued (the webhook sender claims them).
WEBHOOKS = "openbloo_webhooks"
CHANNELS = (JOBS, WEBHOOKS)


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://…`` as libpq spells it (``postgresql://…``), password kept."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgWakeups:
    """LISTENs on :data:`CHANNELS` and calls the wake-ups registered for each; reconnects by itself."""

    def __init__(self, url: str, wakers: dict[str, list[Callable[[], None]]]) -> None:
        self.url = libpq_url(url)
        self.wakers = wakers
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-wakeups")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _wake(self, channel: str) -> None:
        for fn in self.wakers.get(channel, ()):
            fn()

    async def _run(self) -> None:
        import psycopg

        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    for channel in self.wakers:
                        if channel not in CHANNELS:
                            raise ValueError(f"unknown wake-up channel {channel!r}")
                        await conn.execute(f"LISTEN {channel}")
                    self.listening.set()
                    backoff = 0.5
                    for channel in self.wakers:  # whatever was committed while nobody listened
                        self._wake(channel)
                    async for note in conn.notifies():
                        self._wake(note.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server restarted or the connection broke: polling covers the gap
                self.listening.clear()
                log.warning("listening for wake-ups failed (%s); again in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
