"""Wake-ups across processes: a committed batch tells the processes running workers that there is news.

Within one process the writer wakes the dispatcher and the webhook sender after a commit (in-process
listeners). A worker process beside API processes would otherwise learn of new jobs only by polling (every
0.25 s): at light load a message waited about half a poll before it was claimed. A batch that queues
delivery jobs or webhook deliveries records its channels (``Batch.signal``), and:

- on PostgreSQL NOTIFYs them inside its own transaction (delivered at commit, once per channel, never for a
  rolled-back one); every process that runs workers LISTENs on a connection of its own (:class:`PgWakeups`);
- on SQLite, after its commit, sends each channel's name as a datagram to a Unix socket next to the
  database file, on which the process that runs the workers listens (:class:`SqliteWakeups`; one such
  process per file, as the design has it). Nothing listening costs the sender one failed ``sendto``.

Polling stays in both: it finds retries that come due, and covers any moment nobody listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterable

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


# Unix socket paths are limited to about 100 bytes: a database deeper than that gets one in the temp directory.
_MAX_SOCKET_PATH = 100


@functools.lru_cache(maxsize=64)  # asked after every SQLite batch that queued news
def socket_path(database: str) -> str:
    """Where the worker process of the SQLite file ``database`` (an absolute path) listens for wake-ups."""
    path = database + "-wakeups"
    if len(path.encode()) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(database.encode()).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"openbloo-{digest}-wakeups")


_listening_here: set[str] = set()  # socket paths a SqliteWakeups of this process listens on
_sender: socket.socket | None = None


def notify_sqlite(database: str, channels: Iterable[str]) -> None:
    """Tell the worker process of ``database`` (if it listens, and is not this one) about ``channels``."""
    global _sender
    path = socket_path(database)
    if path in _listening_here:
        return  # this process's own workers were woken in-process already
    if _sender is None:
        _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _sender.setblocking(False)
    for channel in channels:
        try:
            _sender.sendto(channel.encode(), path)
        except OSError:  # nobody listens (no worker process, or it is down), or its queue is full: it polls
            return


class SqliteWakeups:
    """Listens on the database's wake-up socket and calls the wake-ups registered for each channel."""

    def __init__(self, database: str, wakers: dict[str, list[Callable[[], None]]]) -> None:
        self.path = socket_path(database)
        self.wakers = wakers
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.bind(self.path)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or _alive(self.path):
                sock.close()
                log.warning("another process listens for wake-ups of this database; this one polls (%s)", exc)
                return
            os.unlink(self.path)  # left by a process that was killed: nobody receives on it
            sock.bind(self.path)
        self._sock = sock
        _listening_here.add(self.path)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)
        for channel in self.wakers:  # whatever was committed while nobody listened
            self._wake(channel)

    async def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        _listening_here.discard(self.path)
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _read(self) -> None:
        assert self._sock is not None
        woken: set[str] = set()
        while True:  # every datagram waiting: a busy API process sends one per channel per commit
            try:
                woken.add(self._sock.recv(64).decode(errors="replace"))
            except (BlockingIOError, InterruptedError):
                break
        for channel in woken:
            self._wake(channel)

    def _wake(self, channel: str) -> None:
        for fn in self.wakers.get(channel, ()):
            fn()


def _alive(path: str) -> bool:
    """Whether a process receives on the datagram socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True
