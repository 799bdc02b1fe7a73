"""Engines for one database: a sync engine (writer thread, migrations, CLI) and an async one (reads)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import msgspec
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from openbloo.config import DatabaseUrls

log = logging.getLogger("openbloo.db")

# Long enough for the CLI and a running server to take turns on one SQLite file without "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000

_json_encode = msgspec.json.Encoder().encode


def _bind_null(_value: None) -> None:
    return None


# The sqlite3 driver binds int, float, str and bytes directly, but for None it first consults its adapter
# registry and the object's __adapt__/__conform__, finds nothing, and only then binds NULL: about 1.2 us a
# parameter, more than a string costs, and the message and status statements bind several each. An adapter
# registered for NoneType is found at the first lookup (process-wide; NULL is bound as before).
sqlite3.register_adapter(type(None), _bind_null)


def _json_dumps(value: Any) -> str:
    # JSON columns (event payloads, message options, metadata) are encoded on every send; the standard
    # library's encoder was 5 % of the send path's CPU, msgspec's costs a fraction of that.
    return _json_encode(value).decode()


# Passed to every engine: the same encoding whichever process or engine wrote a row.
JSON_CODEC: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": msgspec.json.decode}


# Pages of WAL after which a committing connection checkpoints by itself. The writers' checkpoints are done
# by a thread of their own (WalCheckpointer), so this is only the backstop for when it falls behind.
WRITER_AUTOCHECKPOINT_PAGES = 10_000


def sqlite_pragmas(synchronous: str, autocheckpoint: int | None = None) -> Any:
    """The connect-time settings of every openbloo SQLite connection (WAL, durability, lock waits)."""

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if autocheckpoint is not None:
            cur.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
        cur.close()

    return on_connect


def make_sync_engine(urls: DatabaseUrls, *, synchronous: str = "NORMAL", pool_size: int = 5) -> Engine:
    if urls.is_sqlite:
        assert urls.sqlite_path is not None
        if urls.sqlite_path.parent and not urls.sqlite_path.parent.exists():
            urls.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        # Pooled: the writer thread keeps its connection (and its prepared-statement cache) across batches.
        engine = create_engine(urls.sync, connect_args={"check_same_thread": False}, pool_size=pool_size, **JSON_CODEC)
        event.listen(engine, "connect", sqlite_pragmas(synchronous, WRITER_AUTOCHECKPOINT_PAGES))
        # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take control of it.
        event.listen(engine, "connect", lambda c, _r: setattr(c, "isolation_level", None))
        # IMMEDIATE: take the write lock up front, waiting for it (busy_timeout). A deferred transaction that
        # reads first and then writes fails at once with "database is locked" when another process (the CLI
        # next to a busy server) committed in between: SQLite cannot upgrade a stale read snapshot.
        # Straight on the driver connection: through exec_driver_sql, SQLAlchemy's execution machinery cost more
        # than the statement, once per writer batch.
        event.listen(engine, "begin", lambda c: c.connection.dbapi_connection.execute("BEGIN IMMEDIATE"))
        return engine
    return create_engine(urls.sync, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, **JSON_CODEC)


def make_async_engine(urls: DatabaseUrls, *, synchronous: str = "NORMAL", pool_size: int = 10) -> AsyncEngine:
    if urls.is_sqlite:
        engine = create_async_engine(urls.async_, pool_size=pool_size, max_overflow=0, **JSON_CODEC)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas(synchronous))
        return engine
    return create_async_engine(
        urls.async_, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, **JSON_CODEC
    )


class SqliteWriteLock:
    """A queue for SQLite's write lock that wakes the next writer the moment the last one commits.

    SQLite lets one writer at a time into a database file; the others wait in its busy handler, which
    polls with sleeps of 1, 2, 5, 10 … 100 ms. Two busy processes on one file (an API process and a worker,
    or the CLI next to a server) then spend most of their waits asleep while the lock is free, and an
    unlucky batch waits hundreds of milliseconds. Taking an exclusive ``flock`` on a file next to the
    database before ``BEGIN IMMEDIATE`` puts the writers in the kernel's queue instead. SQLite's own locking
    still guarantees correctness: a writer that does not take this lock (another program, an older
    openbloo) only waits the old way.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._mutex = threading.Lock()  # flock is per open file: the threads of one process queue here first
        self._fd = -1
        self._pid = -1

    def _file(self) -> int:
        if self._pid != os.getpid():  # a forked child must not share its parent's open file (and its lock)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextlib.contextmanager
    def held(self, *, wait: bool = True) -> Iterator[bool]:
        """Hold the lock while in the context; yields whether it is held. ``wait=False`` never waits: if a
        thread of this process or another process has the lock now, it yields False (for a caller that must
        not block: the event loop's writes)."""
        if not self._mutex.acquire(blocking=wait):
            yield False
            return
        try:
            fd = self._file()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()


_write_locks: dict[str, SqliteWriteLock] = {}  # one per file: engines on the same file share its queue
_engine_locks: weakref.WeakKeyDictionary[Engine, SqliteWriteLock | None] = weakref.WeakKeyDictionary()
_write_locks_guard = threading.Lock()


def _lock_for(engine: Engine) -> SqliteWriteLock | None:
    database = sqlite_file(engine)
    if database is None:
        return None
    path = database + "-writelock"
    with _write_locks_guard:
        return _write_locks.setdefault(path, SqliteWriteLock(path))


def sqlite_file(engine: Engine) -> str | None:
    """The absolute path of the SQLite file ``engine`` writes, or None (PostgreSQL, in-memory, URI names)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


# Between two checkpoint passes while the log is long and growing (WalCheckpointer).
CATCH_UP_PAUSE = 0.001


class WalCheckpointer:
    """Moves a SQLite file's write-ahead log into the database from a thread of its own.

    By default SQLite checkpoints inside the commit that takes the WAL past 1,000 pages, and a checkpoint
    writes the database file and fsyncs it: the writer thread stalled there, and with it every request
    waiting for its batch (in a closed-loop run of the send route the accepting process sat idle for about
    a third of its wall time, and ran at 1.6x the rate with fsync switched off). This thread runs a PASSIVE
    checkpoint every ``interval`` on a connection of its own, which never blocks the writer or a reader;
    the writers' own auto-checkpoint stays as a backstop (WRITER_AUTOCHECKPOINT_PAGES). Durability does
    not change: a commit is as durable in the WAL as after its checkpoint.

    Once the log holds ``catch_up_frames`` and is still growing, a pass follows the last one after a
    millisecond (CATCH_UP_PAUSE). The log starts again from its beginning only when a writer begins a
    transaction with every frame already copied; a writer that commits every few milliseconds never met
    that between passes 100 ms apart, so the log grew to the backstop, whose checkpoint in the writer's
    commit copied what the last pass had not seen (up to a tenth of a second of writes) and synced the
    file, on the event loop: the tail of the send route's closed-loop latency. Passes a millisecond apart
    soon end between two of the writer's transactions, and the next one restarts the log (accept only:
    p99 8-9 ms against 27-29, docs/benchmarks.md, change 73).
    """

    def __init__(self, path: str, interval: float = 0.1, catch_up_frames: int = 4_000) -> None:
        self.path = path
        self.interval = interval
        self.catch_up_frames = catch_up_frames
        self.passes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            pause, last_frames, written_at = self.interval, -1, 0.0
            while not self._stop.wait(pause):
                try:
                    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # busy or the file went away: the next round tries again
                    log.debug("WAL checkpoint of %s: %s", self.path, exc)
                    frames = -1
                self.passes += 1
                now = time.monotonic()
                if frames != last_frames:
                    written_at, last_frames = now, frames
                # A long log that is still growing: pass again soon. Not on an idle server, whose long log
                # restarts at its next write anyway (every frame is copied by then).
                long_and_growing = frames >= self.catch_up_frames and now - written_at < self.interval
                pause = CATCH_UP_PAUSE if long_and_growing else self.interval
        finally:
            conn.close()


def write_lock(engine: Engine) -> contextlib.AbstractContextManager[bool]:
    """What a write transaction on ``engine`` holds: the SQLite file's writer queue, or nothing elsewhere."""
    lock = _write_lock_of(engine)
    return lock.held() if lock is not None else contextlib.nullcontext(True)


def write_lock_if_free(engine: Engine) -> contextlib.AbstractContextManager[bool]:
    """:func:`write_lock` taken only if it is free now; the context yields whether it was (always, off SQLite)."""
    lock = _write_lock_of(engine)
    return lock.held(wait=False) if lock is not None else contextlib.nullcontext(True)


def _write_lock_of(engine: Engine) -> SqliteWriteLock | None:
    try:
        return _engine_locks[engine]
    except KeyError:  # resolved once per engine: every batch asks
        lock = _engine_locks[engine] = _lock_for(engine)
        return lock
