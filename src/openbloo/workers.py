"""The background workers of one process: the delivery dispatcher with the device transports it drives, the
BlueBubbles reconciler, and the webhook sender.

``openbloo worker`` runs them alone. ``openbloo serve`` runs them in an ``openbloo worker`` process of its own
(:class:`WorkerProcess`), which it starts, restarts and stops, and which dies with it; with
``--single-process`` (or an in-memory database) it runs them beside the API in its own event loop, and with
``--no-workers`` not at all.

Why a process of its own: the API process then has the event loop to itself, so on a SQLite file it runs
its writer's batches on that loop (``db/writer.py``), and delivery and webhooks run on the second core
instead of taking turns with accepting for one interpreter (docs/benchmarks.md, sixth round).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time

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


async def run_worker_process(runtime: Runtime, parent_pid: int | None = None) -> None:
    """``openbloo worker``: the workers alone, until SIGINT/SIGTERM (or, started by ``serve``, until it is gone)."""
    runtime.start()
    workers = Workers(runtime)
    await workers.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    watch = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid else None
    log.info("worker running")
    try:
        await stop.wait()
    finally:
        if watch is not None:
            watch.cancel()
        await workers.stop()
        await runtime.close()


# -- serve's worker process -----------------------------------------------------------------------------------

# Set by ``serve`` in its worker process's environment: the PID the worker must not outlive.
SERVE_PID_ENV = "OPENBLOO_SERVE_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def bind_to_parent(parent_pid: int) -> None:
    """Make this process die with ``parent_pid``, its parent: a ``serve`` killed with SIGKILL takes its worker
    process with it, so the ``serve`` started next never finds a worker of the dead one still running.

    Linux delivers SIGKILL to this process when its parent exits (``prctl(PR_SET_PDEATHSIG)``; no Python
    library wraps it, hence ctypes). Elsewhere :func:`_watch_parent` notices within a second and stops the
    workers. A parent that died before this call is caught by the PID check that follows it.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        log.warning("serve (pid %d) is gone; the worker process exits", parent_pid)
        os._exit(0)


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent_pid:
        await asyncio.sleep(1.0)
    log.warning("serve (pid %d) is gone; the worker process stops", parent_pid)
    stop.set()


class WorkerProcess:
    """``openbloo serve``'s background workers: one ``openbloo worker`` process, started, watched, restarted
    after an unexpected exit (after 1, 2, 5, 10, then every 30 seconds) and stopped by ``serve``.

    The worker is given the database, host and port ``serve`` runs with (the transports register callback
    URLs from them) and inherits the rest of the environment. It binds its life to ``serve``'s
    (:func:`bind_to_parent`). Every start happens on the watcher thread, which lives as long as the worker
    may: Linux's parent-death signal follows the *thread* that started the child.
    """

    RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)

    def __init__(self, database_url: str, *, host: str, port: int) -> None:
        self.command = [sys.executable, "-m", "openbloo.cli", "worker", "--database-url", database_url]
        self.env = {
            **os.environ,
            SERVE_PID_ENV: str(os.getpid()),
            "OPENBLOO_HOST": host,
            "OPENBLOO_PORT": str(port),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="openbloo-worker-process", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = subprocess.Popen(self.command, env=self.env)
            began = time.monotonic()
            code = self.process.wait()
            if self._stopping.is_set():
                return
            failures = 0 if time.monotonic() - began > 60 else failures + 1
            delay = self.RESTART_DELAYS[min(max(failures - 1, 0), len(self.RESTART_DELAYS) - 1)]
            log.error("the worker process exited (code %s); starting it again in %g s", code, delay)
            self._stopping.wait(delay)

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the worker to stop (SIGTERM: it finishes what it holds), then kill it after ``timeout``."""
        with self._lock:
            self._stopping.set()
            proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._thread is not None:
            self._thread.join(5)
