"""A batch: the transaction that several units of work share, and what a unit may do in it.

Rules for units:
- Check first, write later. A unit that raises before writing anything leaves no trace and costs its
  neighbours nothing. A unit that wrote immediately (``batch.conn.execute``) and then fails is undone
  too, but expensively: the whole batch is rolled back and each unit re-run alone. Units that must write
  before a check that can fail call ``batch.savepoint()`` first, which confines the undo to themselves.
- Bulk rows go through ``batch.insert_later`` and counter updates through ``batch.execute_later``: they
  are written once per batch, many parameter sets per statement.
- A unit may run twice: if anything fails at flush or commit time the batch is rolled back and each unit
  is re-run alone, so one bad unit cannot fail its neighbours. Units are deterministic functions of their
  input and the database, which makes that safe.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection, Engine, Executable, Table, event
from sqlalchemy.sql.dml import UpdateBase

from openbloo.db.deferred_begin import begin_deferred, begun_by_batch, take_begin
from openbloo.db.direct import Prepared, compile_direct, dbapi_cursor
from openbloo.db.flush import insert_of, null_by_default, write_queued

T = TypeVar("T")
Unit = Callable[["Batch"], T]


_MISSING = object()


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


# Remembered under a key to say "the database has no such row" (a batch-level lookup found none), so the
# unit that asks does not query again. ``recall`` returns it like any value; lookups check for it.
ABSENT: Any = _Absent()


class Lookups(Protocol):
    """What a unit will look up, declared before it runs, so a batch can read it for all its units at once."""

    @classmethod
    def load_all(cls, batch: Batch, wanted: list[Any]) -> None:
        """Read what ``wanted`` (instances of ``cls``) need, one query per table, and remember it on ``batch``."""


class UnitWithLookups(Generic[T]):
    """A unit of work and its :class:`Lookups`: the batch reads every unit's rows in a few queries first.

    On PostgreSQL each lookup is a round trip, and a send's four (idempotency record, chat, conversation,
    contact) one after another kept the database waiting for the writer; read per batch, they cost four
    round trips for the whole batch. The unit itself still works without them (it queries what it finds
    no answer for), so lookups are an optimization, never a condition.
    """

    __slots__ = ("fn", "lookups")

    def __init__(self, fn: Callable[[Batch], T], lookups: Lookups) -> None:
        self.fn = fn
        self.lookups = lookups

    def __call__(self, batch: Batch) -> T:
        return self.fn(batch)


class Batch:
    """One transaction shared by several units of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        # The writer's PostgreSQL connection leaves the driver in autocommit mode and the batch opens its
        # transaction itself, sending BEGIN with its first statements and COMMIT with its flush (see
        # `db.deferred_begin`): the driver's own BEGIN waits a round trip before the first statement.
        # Per-batch identity map: units that touch the same chat/conversation/number see each other's
        # pending state without another query. Changes are journaled so a failed unit's are undone.
        self._cache: dict[Any, Any] = {}
        self._undo: list[tuple[Any, Any]] = []
        # Deferred statements, executed at flush in order of first use, many parameter sets per statement.
        # (order, statement, parameter sets): dicts for an Executable, tuples for a Prepared statement.
        self._pending: dict[Any, tuple[int, Any, list[Any]]] = {}
        self._last_per: dict[Any, str | int] = {}
        self._after_commit: list[Callable[[], None]] = []
        self._signals: set[str] = set()
        self._savepoint: Any = None
        # Set when the running unit executes an INSERT/UPDATE/DELETE itself (not deferred): if that unit
        # then fails outside a savepoint, its writes cannot be undone alone and the batch is re-run.
        self.wrote = False
        self._cursor: Any = None
        _watch_engine(conn.engine)

    # -- reads -------------------------------------------------------------------------------------------
    def first(self, stmt: Executable, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a prebuilt SELECT as a plain tuple (columns in select order), or None.

        Runs on the driver cursor (:mod:`openbloo.db.direct`) when the statement allows it: the hot
        lookups of the send path cost a fraction of ``conn.execute`` that way.
        """
        rows = self.all(stmt, params)
        return rows[0] if rows else None

    def all(self, stmt: Executable, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of a prebuilt SELECT (or of an UPDATE/INSERT ... RETURNING) as plain tuples (see :meth:`first`)."""
        if isinstance(stmt, UpdateBase):
            self.wrote = True  # an immediate write, as with :meth:`execute`
        direct = compile_direct(stmt, self.conn.dialect)
        if direct is None:
            return [tuple(r) for r in self.conn.execute(stmt, params)]
        cur = self._send(direct.sql, direct.params(params))
        return direct.rows(cur.fetchall())

    def _send(self, sql: str, params: Any) -> Any:
        """Run one statement on the batch's driver cursor (after the deferred BEGIN, in one round trip)."""
        cur = self._raw_cursor()
        if not begin_deferred(self.conn):
            cur.execute(sql, params)
            return cur
        with self._pipeline():
            self._begin_now()
            cur.execute(sql, params)
        return cur

    def _begin_now(self) -> None:
        """Send the deferred BEGIN (in a pipeline, it goes out with what follows it)."""
        if take_begin(self.conn):
            self.conn.connection.dbapi_connection.cursor().execute("BEGIN")  # type: ignore[union-attr]

    def all_many(self, queries: list[tuple[Executable, dict[str, Any]]]) -> list[list[tuple[Any, ...]]]:
        """Every row of each prebuilt SELECT of ``queries`` (see :meth:`all`), in their order.

        On PostgreSQL the queries go out together in one pipeline and their answers come back in one round
        trip: a batch's lookups are independent reads, and one after another each waited a round trip
        (with the transaction's ``BEGIN`` before the first), most of an accepting batch's time at light load
        (docs/benchmarks.md, change 48). On SQLite they simply run in turn.
        """
        if len(queries) < 2 or not self.is_postgres:
            return [self.all(stmt, params) for stmt, params in queries]
        directs = [compile_direct(stmt, self.conn.dialect) for stmt, _ in queries]
        if any(d is None for d in directs):
            return [self.all(stmt, params) for stmt, params in queries]
        raw: Any = self.conn.connection.dbapi_connection
        cursors = []
        with self._pipeline():
            self._begin_now()
            for direct, (_stmt, params) in zip(directs, queries, strict=True):
                assert direct is not None
                cur = raw.cursor()  # one each: a cursor keeps only its last statement's rows
                cur.execute(direct.sql, direct.params(params))
                cursors.append(cur)
        out = []
        for direct, cur in zip(directs, cursors, strict=True):
            assert direct is not None
            out.append(direct.rows(cur.fetchall()))
            cur.close()
        return out

    def execute(self, stmt: Executable, params: dict[str, Any]) -> int:
        """Run a prebuilt INSERT/UPDATE/DELETE now (not deferred); returns the number of rows it matched.

        Like ``batch.conn.execute``, this is an immediate write: a unit that fails after it is undone by
        re-running its batch unit by unit, unless it took a :meth:`savepoint` first.
        """
        self.wrote = True
        direct = compile_direct(stmt, self.conn.dialect)
        if direct is None:
            return int(self.conn.execute(stmt, params).rowcount)
        return int(self._send(direct.sql, direct.params(params)).rowcount)

    def _raw_cursor(self) -> Any:
        if self._cursor is None:
            self._cursor = dbapi_cursor(self.conn)
        return self._cursor

    def recall(self, key: Any) -> Any:
        """The value a unit of this batch remembered under ``key``, or None."""
        return self._cache.get(key)

    def remember(self, key: Any, value: Any) -> None:
        self._undo.append((key, self._cache.get(key, _MISSING)))
        self._cache[key] = value

    # -- writes ------------------------------------------------------------------------------------------
    def insert_later(self, table: Table, row: dict[str, Any], order: int = 50) -> None:
        """Queue a row; all rows of a table are inserted with one statement at flush, in queue order.

        ``order`` sorts the statements at flush: parents before children, so foreign keys hold. Columns the
        row leaves None are left out of the INSERT where the table's default is NULL anyway (most of a
        message row's): binding a None parameter cost the SQLite driver more than a string did.
        """
        if None in row.values():
            nulls = null_by_default(table)
            row = {k: v for k, v in row.items() if v is not None or k not in nulls}
        self.execute_later(table, insert_of(table), row, order)

    def execute_later(
        self,
        key: Any,
        stmt: Executable,
        params: dict[str, Any],
        order: int = 100,
        *,
        last_per: str | None = None,
    ) -> None:
        """Queue ``stmt`` with ``params``; every queued parameter set of ``key`` runs as one executemany.

        ``last_per`` names a parameter that identifies the row a parameter set writes in full (every
        column it sets, from the unit's latest view of the row): of several sets for one row, only the
        last is executed. A message that goes queued → sent → delivered → read in one batch is then one
        UPDATE, not three.

        On PostgreSQL an UPDATE's sets run in the order of the value its WHERE compares the primary key with
        (:func:`openbloo.db.direct.row_key_of`): one global lock order for every process's batches.
        """
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = (order, stmt, [params])
            if last_per is not None:
                self._last_per[key] = last_per
        elif entry[1] is stmt:
            entry[2].append(params)
        else:  # two statements under one key: the second's sets would run with the first's SQL
            raise ValueError(f"pending key {key!r} already queues another statement")

    def add(
        self, prepared: Prepared, values: tuple[Any, ...], order: int = 100, *, last_per: int | None = None
    ) -> None:
        """Queue one row (or one parameter set) of ``prepared``, its values in ``prepared.names`` order; all of
        them run as one executemany at flush, like :meth:`execute_later`'s. ``last_per``: the index of the
        value that identifies the row a set writes in full (see :meth:`execute_later`); an UPDATE's sets are
        ordered as :meth:`execute_later`'s are."""
        entry = self._pending.get(prepared)
        if entry is None:
            self._pending[prepared] = (order, prepared, [values])
            if last_per is not None:
                self._last_per[prepared] = last_per
        else:
            entry[2].append(values)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the writer thread once the batch is durable (wake-ups, cache invalidation)."""
        self._after_commit.append(fn)

    def signal(self, channel: str) -> None:
        """Tell other processes, at commit, that there is news on ``channel`` (:mod:`openbloo.db.wakeups`).
        A unit that fails after signalling costs at most a wake-up that finds nothing."""
        self._signals.add(channel)

    def savepoint(self) -> None:
        """Make the current unit's immediate writes roll back if the unit fails. Idempotent per unit."""
        if self._savepoint is None:
            self._savepoint = self.conn.begin_nested()

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    # -- driving (writer internals) ----------------------------------------------------------------------
    def _run_unit(self, unit: Unit[Any]) -> tuple[bool, Any]:
        pending_mark = {k: len(v[2]) for k, v in self._pending.items()}
        commits_mark = len(self._after_commit)
        self._undo = []
        self.wrote = False
        _running.batch = self
        try:
            result = unit(self)
        except BaseException as exc:
            if self._savepoint is not None:
                self._savepoint.rollback()
                self._savepoint = None
            elif self.wrote:
                raise _WroteThenFailed(exc) from exc
            # Forget whatever the failed unit queued or remembered, so its half-plan never reaches the
            # database and never misleads the units after it.
            for key in list(self._pending):
                keep = pending_mark.get(key, 0)
                if keep:
                    del self._pending[key][2][keep:]
                else:
                    del self._pending[key]
            del self._after_commit[commits_mark:]
            for key, old in reversed(self._undo):
                if old is _MISSING:
                    self._cache.pop(key, None)
                else:
                    self._cache[key] = old
            self._undo = []
            return False, exc
        finally:
            _running.batch = None
        if self._savepoint is not None:
            self._savepoint.commit()
            self._savepoint = None
        self._undo = []
        return True, result

    def flush(self, *, commit: bool = False) -> None:
        """Write what the units queued. ``commit``: this is the transaction's end; where the batch opened the
        transaction itself (`db.deferred_begin`), its COMMIT goes out in the same round trip as the writes."""
        if not self._pending and not self._signals:
            return
        with self._pipeline():
            self._begin_now()
            self._flush_pending()
            if self._signals and self.is_postgres:
                cur = self._raw_cursor()
                for channel in sorted(self._signals):
                    cur.execute(f"NOTIFY {channel}")  # channel names are the constants of db.wakeups
                self._signals.clear()
            if commit and begun_by_batch(self.conn):  # begun here: ended here
                self._raw_cursor().execute("COMMIT")

    def _signals_after_commit(self) -> set[str]:
        """The channels to tell other processes about once committed (SQLite; PostgreSQL NOTIFYs in the flush)."""
        signals, self._signals = self._signals, set()
        return signals

    def _pipeline(self) -> contextlib.AbstractContextManager[Any]:
        """PostgreSQL: send every statement of the flush before reading any result (one round trip, not one
        per statement; errors surface when the pipeline ends, before the commit). SQLite: nothing to do."""
        if self.is_postgres:
            pipeline = getattr(self.conn.connection.dbapi_connection, "pipeline", None)
            if pipeline is not None:
                return pipeline()
        return contextlib.nullcontext()

    def _flush_pending(self) -> None:
        if self._pending:
            write_queued(self.conn, self._raw_cursor(), self._pending, self._last_per)
            self._pending.clear()

    def _commit_hooks(self) -> list[Callable[[], None]]:
        hooks, self._after_commit = self._after_commit, []
        return hooks


# The batch whose unit is running on this thread: the engine-level listener below reports writes to it.
_running = threading.local()
_watched: set[int] = set()


def _on_execute(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
    if take_begin(conn):  # a statement of SQLAlchemy's own (conn.execute, a SAVEPOINT) comes first
        cursor.execute("BEGIN")
    batch = getattr(_running, "batch", None)
    if batch is not None and not batch.wrote and statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
        batch.wrote = True


def _watch_engine(engine: Engine) -> None:
    # One listener per engine, installed once: per-connection listeners cost more than the statements.
    if id(engine) not in _watched:
        _watched.add(id(engine))
        event.listen(engine, "before_cursor_execute", _on_execute)


class _WroteThenFailed(Exception):
    """A unit failed after writing outside a savepoint: only a rollback of its whole batch undoes it."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error
