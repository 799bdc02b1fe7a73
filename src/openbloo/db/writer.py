"""Group commit: every write goes through one writer that commits many units of work together.

A *unit of work* is a plain function ``unit(batch) -> result`` that reads and writes through a
:class:`Batch`. Units waiting when the writer wakes up run one after another inside a single transaction;
each caller is answered only once that transaction has committed, so "answered" still means "durable",
at the cost of one commit (one fsync on PostgreSQL, one WAL append on SQLite) per batch instead of one per
request (DESIGN.md "Performance by design").

Units and the :class:`~openbloo.db.batch.Batch` they write through are in :mod:`openbloo.db.batch`;
this module runs them: one transaction per batch on the writer's held connection, and the re-runs when a
batch fails.

Where a batch runs: on PostgreSQL, on the writer thread (each statement is a round trip; the event loop
must not wait for them). On a SQLite file, on the event loop that started the writer, when the file's write
lock is free at that moment (see :meth:`Writer._run_inline`), and on the writer thread otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine

from openbloo.db.batch import Batch, Lookups, Unit, UnitWithLookups, _WroteThenFailed
from openbloo.db.deferred_begin import deferred_begin
from openbloo.db.engine import WalCheckpointer, sqlite_file, write_lock, write_lock_if_free
from openbloo.db.wakeups import notify_sqlite
from openbloo.errors import ApiError

log = logging.getLogger("openbloo.writer")

T = TypeVar("T")

MAX_BATCH = 512

# How a batch on the home event loop gathers its units, after a batch of more than one (Writer._run_inline):
# it starts once no unit has come for GATHER_QUIET, or GATHER_MAX after its first unit came.
GATHER_QUIET = 50e-6
GATHER_MAX = 500e-6


class HeldConnection:
    """The one connection a writer keeps across its batches (whichever thread runs them, one at a time).

    Checking a connection out of the pool and back in for every batch (the pool's reset is a ROLLBACK)
    cost as much as a tenth of the accepting process's CPU at a few hundred batches a second. The writer
    owns this connection alone; after any failure it is closed and a fresh one is taken for the next
    transaction. After an idle second it goes back to the pool and is checked out again, so the pool's
    pre-ping (PostgreSQL) finds a connection the server dropped meanwhile before a batch runs on it.
    """

    IDLE_SECONDS = 1.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.database = sqlite_file(engine)  # found once: the wake-ups after each batch name it
        self._postgres = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._used = 0.0

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        conn = self._conn
        now = time.monotonic()
        if conn is None or conn.closed or conn.invalidated or now - self._used > self.IDLE_SECONDS:
            self.close()
            conn = self._conn = self.engine.connect()
            if self._postgres:  # the batch opens and ends its transaction itself (db.deferred_begin)
                conn = self._conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            with conn.begin(), deferred_begin(conn) if self._postgres else contextlib.nullcontext():
                yield conn
        except BaseException:
            self.close()
            raise
        finally:
            self._used = time.monotonic()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def run_units(
    source: Engine | HeldConnection, units: list[Unit[Any]], *, again: bool = True, locked: bool = False
) -> list[tuple[bool, Any]]:
    """Run units in one transaction; on a batch-level failure, re-run each alone. Returns (ok, value) pairs.

    ``source`` is an engine (a connection from its pool per transaction) or the writer's held connection.
    A batch that fails at flush or commit, even a batch of one unit, is first run once more as a whole
    (``again``): the usual cause is a row another process committed meanwhile (the same new chat, contact
    or conversation, sent to from two API processes), which the units find when they run again, or a
    connection the server dropped (the run again takes a new one). Only if that fails too is each unit run
    alone, one transaction each, so that one bad unit cannot fail its neighbours.

    ``locked``: the caller already holds the file's write lock (:func:`~openbloo.db.engine.write_lock_if_free`).
    """
    engine = source.engine if isinstance(source, HeldConnection) else source
    try:
        with contextlib.nullcontext() if locked else write_lock(engine), source.begin() as conn:
            batch = Batch(conn)
            _load_lookups(batch, units)
            outcomes = [batch._run_unit(u) for u in units]
            batch.flush(commit=True)
            hooks = batch._commit_hooks()
            signals = batch._signals_after_commit()
    except _WroteThenFailed as failed:
        if len(units) == 1:  # the rollback above undid its writes; report its own error
            return [(False, failed.error)]
        return _one_by_one(source, units, locked)
    except Exception:
        if again:  # a batch of one unit too: two API processes sending to the same new recipient at once
            log.info("batch of %d failed at flush/commit; running it once more", len(units))
            return run_units(source, units, again=False, locked=locked)
        if len(units) == 1:
            log.exception("unit of work failed at flush/commit")
            raise
        log.warning("batch of %d failed at flush/commit; re-running its units one by one", len(units))
        return _one_by_one(source, units, locked)
    if signals:
        database = source.database if isinstance(source, HeldConnection) else sqlite_file(engine)
        if database is not None:
            notify_sqlite(database, signals)
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("after-commit hook failed")
    return outcomes


def _load_lookups(batch: Batch, units: list[Unit[Any]]) -> None:
    by_kind: dict[type[Lookups], list[Lookups]] = {}
    for u in units:
        if isinstance(u, UnitWithLookups):
            by_kind.setdefault(type(u.lookups), []).append(u.lookups)
    for kind, wanted in by_kind.items():
        kind.load_all(batch, wanted)


def _one_by_one(source: Engine | HeldConnection, units: list[Unit[Any]], locked: bool) -> list[tuple[bool, Any]]:
    outcomes: list[tuple[bool, Any]] = []
    for u in units:
        try:
            outcomes.extend(run_units(source, [u], locked=locked))
        except Exception as exc:  # the unit's own failure, reported to its caller alone
            outcomes.append((False, exc))
    return outcomes


def run_unit(engine: Engine, unit: Unit[T]) -> T:
    """Run one unit synchronously in its own transaction (CLI, tests, start-up)."""
    ok, value = run_units(engine, [unit])[0]
    if not ok:
        raise value
    return value


class _Item(Generic[T]):
    __slots__ = ("future", "loop", "unit")

    def __init__(self, unit: Unit[T], loop: asyncio.AbstractEventLoop, future: asyncio.Future[T]) -> None:
        self.unit = unit
        self.loop = loop
        self.future = future


def _settle(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in results:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class Writer:
    """The writer: ``await writer.run(unit)`` returns the unit's result once it is committed.

    ``inline`` (default: on a SQLite file) lets the event loop that starts the writer run the batches of the
    units it submits itself. Profiles of the send route put the writer thread's wall time at a third of
    waits for the GIL: every SQLite call gives the GIL back, and taking it again meant waiting for the event
    loop's thread to let go, which it held while parsing requests and writing answers. Nothing ran in
    parallel in exchange (SQLite on a file in the page cache, no fsync at commit in WAL mode: the C part is
    short), so running the batch on the event loop does the same work without the hand-offs (accept only:
    167.6 against 203.7 µs of CPU per send, docs/benchmarks.md). The batch waits for nothing there: it runs
    only if the file's write lock is free at that moment; otherwise (another process or a CLI command is
    writing) it goes to the writer thread, which waits for the lock as before. A process that also runs the
    workers keeps its batches on the thread (:meth:`openbloo.runtime.Runtime.start`).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        name: str = "openbloo-writer",
        inline: bool | None = None,
        gather_quiet: float = GATHER_QUIET,
        gather_max: float = GATHER_MAX,
    ) -> None:
        self.engine = engine
        self._held = HeldConnection(engine)
        path = self._held.database
        self.inline = path is not None if inline is None else inline
        self._home: asyncio.AbstractEventLoop | None = None  # the event loop that runs batches itself
        self._inline_items: list[_Item[Any]] = []
        self.gather_quiet = gather_quiet
        self.gather_max = gather_max
        self._gathered = 0  # units of the next in-line batch when the loop last looked, and since when
        self._gathered_at = self._gather_started = 0.0
        self._last_size = 0  # units of the last batch run in line
        self._running = threading.Lock()  # one batch at a time on the held connection, whichever thread runs it
        self._checkpointer = WalCheckpointer(path) if path is not None else None
        self._queue: queue.SimpleQueue[_Item[Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._started = False
        self.batches = 0
        self.units = 0

    def start(self) -> None:
        if not self._started:
            self._started = True
            if self.inline:
                try:
                    self._home = asyncio.get_running_loop()
                except RuntimeError:  # started outside an event loop: every batch on the thread
                    self._home = None
            self._thread.start()
            if self._checkpointer is not None:
                self._checkpointer.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._started:
            self._home = None
            self._gathered = 0
            items, self._inline_items = self._inline_items, []
            for it in items:  # submitted but not run yet: the thread runs them before it stops
                self._queue.put(it)
            self._queue.put(None)
            self._thread.join(timeout)
            if self._checkpointer is not None:
                self._checkpointer.stop()
            self._started = False
            log.info("writer: %d units in %d batches", self.units, self.batches)

    async def run(self, unit: Unit[T]) -> T:
        # If the caller is cancelled, so is the future; the unit still runs and commits (it is already queued),
        # and _settle skips a future that is done. No shield is needed for that, and one per send cost a
        # task callback and a second future.
        return await self.submit(unit)

    def submit(self, unit: Unit[T]) -> asyncio.Future[T]:
        """Queue ``unit``; the future (of the running event loop) gets its result once it is committed."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        item = _Item(unit, loop, fut)
        if loop is self._home:
            self._inline_items.append(item)
            if len(self._inline_items) == 1:  # the units submitted until the loop gets to it make one batch
                loop.call_soon(self._run_inline)
        else:
            self._queue.put(item)
        return fut

    def _run_inline(self) -> None:
        """Run the units the home event loop submitted, on it, if nothing else is writing right now.

        When the last batch run here had company (more than one unit), the next one first gathers: while
        units keep coming (one came less than ``gather_quiet`` ago, and the first less than ``gather_max``
        ago) it lets the loop take one more turn, which reads the requests that arrived meanwhile, and looks
        again. A batch has a cost of its own besides its units' (the commit, the lookups' statements, the
        pages its units share), and clients answered by one batch send their next requests a few tens of
        microseconds later: started at once, a batch took whichever of them had arrived, and 32 clients in a
        closed loop settled into two or more batches a round (16 units at the mean) where one would do (31
        with gathering). After a batch of one unit (sends that come one at a time) nothing waits: there,
        gathering only delayed each send and spent CPU the workers beside the API wanted (accept →
        delivered 1–3 ms later at 570 sends/s, docs/benchmarks.md).
        """
        if not self._inline_items:
            return
        home = self._home
        if self._last_size > 1 and home is not None and self._units_keep_coming():
            home.call_soon(self._run_inline)  # the loop polls its sockets (without waiting) before this runs again
            return
        self._gathered = 0
        items, self._inline_items = self._inline_items, []
        if self._running.acquire(blocking=False):
            try:
                with write_lock_if_free(self.engine) as free:
                    if free:
                        for start in range(0, len(items), MAX_BATCH):
                            self._run_batch(items[start : start + MAX_BATCH], inline=True)
                        self._last_size = len(items)
                        return
            finally:
                self._running.release()
        for it in items:  # the thread is running a batch, or another process holds the file: the thread waits
            self._queue.put(it)

    def _units_keep_coming(self) -> bool:
        """Whether the batch being gathered should wait another turn of the loop (see :meth:`_run_inline`)."""
        waiting, now = len(self._inline_items), time.monotonic()
        if waiting != self._gathered:  # a unit came since the loop last looked
            if not self._gathered:
                self._gather_started = now
            self._gathered, self._gathered_at = waiting, now
        return (
            waiting < MAX_BATCH
            and now - self._gathered_at < self.gather_quiet
            and now - self._gather_started < self.gather_max
        )

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            items: list[_Item[Any]] = [first]
            while len(items) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                items.append(nxt)
            self._run_batch(items)
        with self._running:  # after the last batch, and never under an in-line one still finishing
            self._held.close()

    def _run_batch(self, items: list[_Item[Any]], *, inline: bool = False) -> None:
        """Run one batch and answer its callers; ``inline``: on the home event loop, ``_running`` and the file's
        write lock already held."""
        try:
            with contextlib.nullcontext() if inline else self._running:
                outcomes = run_units(self._held, [it.unit for it in items], locked=inline)
        except Exception as exc:  # the database itself failed (connection lost, disk full ...)
            outcomes = [(False, exc)] * len(items)
        self.batches += 1
        self.units += len(items)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for it, (ok, value) in zip(items, outcomes, strict=True):
            if not ok and not isinstance(value, ApiError):
                log.error("unit of work failed: %r", value, exc_info=value)
            by_loop.setdefault(it.loop, []).append((it.future, ok, value))
        # One wake-up per event loop per batch, not one per request.
        for loop, results in by_loop.items():
            if inline:  # on that very loop
                _settle(results)
                continue
            with contextlib.suppress(RuntimeError):  # that loop has closed; its callers are gone
                loop.call_soon_threadsafe(_settle, results)
