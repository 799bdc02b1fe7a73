"""The background workers of one process: the delivery dispatcher with the device transports it drives, the
BlueBubbles reconciler, and the webhook sender.

``openbloo serve`` runs them beside the API unless ``--no-workers``; ``openbloo worker`` runs them alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from openbloo.db import wakeups
from openbloo.db.engine import sqlite_file
from openbloo.db.wakeups import PgWakeups, SqliteWakeups
from openbloo.delivery.dispatcher import Dispatcher
from openbloo.devices.reconciler import Reconciler
from openbloo.events.sender import WebhookSender
from openbloo.runtime import Runtime
from openbloo.transports.registry import TransportRegistry

log = logging.getLogger("openbloo.workers")


class Workers:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = TransportRegistry(runtime)
        self.dispatcher = Dispatcher(runtime, self.registry)
        self.reconciler = Reconciler(runtime, self.registry)
        self.webhooks = WebhookSender(runtime)
        # Other processes' commits wake these workers.
        self.wakeups: PgWakeups | SqliteWakeups | None = None
        wakers = {wakeups.JOBS: [self.dispatcher.wake], wakeups.WEBHOOKS: [self.webhooks.wake]}
        database = sqlite_file(runtime.engine)
        if runtime.urls.dialect == "postgresql":
            self.wakeups = PgWakeups(runtime.urls.sync, wakers)
        elif database is not None:
            self.wakeups = SqliteWakeups(database, wakers)

    async def start(self) -> None:
        await self.webhooks.start()
        await self.dispatcher.start()  # starts the registry: every device transport runs from here on
        await self.reconciler.start()
        if self.wakeups is not None:
            await self.wakeups.start()

    async def stop(self) -> None:
        if self.wakeups is not None:
            await self.wakeups.stop()
        await self.reconciler.stop()
        await self.dispatcher.stop()
        await self.webhooks.stop()


async def run_worker_process(runtime: Runtime) -> None:
    """``openbloo worker``: the workers alone, until SIGINT/SIGTERM."""
    runtime.start()
    workers = Workers(runtime)
    await workers.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    log.info("worker running")
    try:
        await stop.wait()
    finally:
        await workers.stop()
        await runtime.close()
