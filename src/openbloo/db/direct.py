"""Core statements compiled once and run straight on the DBAPI cursor: the writer's hot path.

A profile of the send path (docs/benchmarks.md) showed SQLAlchemy's per-execution machinery (cache-key
generation, parameter construction, execution context, result wrapping) costing several times what
SQLite itself spends on the statement. The statements of the hot path are fixed, so they are compiled
once per dialect (and, for an INSERT, per set of columns), with the bind processors SQLAlchemy would
apply (JSON serialization and the like), and then run on the raw driver cursor of the batch's
connection, inside the same transaction.

The statements stay SQLAlchemy Core objects, so their SQL is written and reviewed in one place and is
still valid for every dialect. A statement this module cannot run faithfully (Python-side column defaults,
expanding IN parameters) is reported as unsupported and the caller
uses ``Connection.execute`` as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Executable
from sqlalchemy.sql.dml import Insert


class Direct:
    """One statement compiled for one dialect: SQL text, parameter order, bind processors, constants."""

    __slots__ = (
        "_constants",
        "_get",
        "_names",
        "_none_safe",
        "_procs",
        "_single",
        "positional",
        "result_procs",
        "sql",
    )

    def __init__(
        self,
        sql: str,
        positional: bool,
        names: list[str],
        processors: dict[str, Callable[[Any], Any]],
        constants: dict[str, Any],
        result_procs: list[tuple[int, Callable[[Any], Any]]] | None = None,
    ) -> None:
        self.sql = sql
        # (column position, result processor) for the columns SQLAlchemy would convert on the way out.
        self.result_procs = result_procs or []
        self.positional = positional
        self._names = names
        self._get = itemgetter(*names) if names else (lambda _values: ())
        self._single = len(names) == 1
        # (position, bind processor) for the parameters SQLAlchemy would convert (JSON and the like).
        self._procs = [(i, processors[n]) for i, n in enumerate(names) if processors.get(n) is not None]
        # Converters that turn None into None (nullable JSON columns, the usual empty message fields) are
        # skipped for None: most parameters of a message row are None.
        self._none_safe = {i for i, proc in self._procs if _maps_none_to_none(proc)}
        self._constants = constants

    def params(self, values: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        """The driver's parameters for one set of ``values`` (named as the statement's bind parameters)."""
        try:
            got = self._get(values)
        except KeyError:
            got = self._get({**self._constants, **values})
        if self.positional and not self._procs:
            return (got,) if self._single else got  # nothing to convert: itemgetter's tuple is the row
        row = [got] if self._single else list(got)
        none_safe = self._none_safe
        for i, proc in self._procs:
            value = row[i]
            if value is None and i in none_safe:
                continue
            row[i] = proc(value)
        if self.positional:
            return row
        return dict(zip(self._names, row, strict=True))

    def rows(self, fetched: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Driver rows as SQLAlchemy would return them (result processors applied), as plain tuples."""
        if not self.result_procs:
            return fetched
        out = []
        for r in fetched:
            if all(r[i] is None for i, _proc in self.result_procs):
                out.append(r)  # nothing to convert (NULL JSON columns, the common case)
                continue
            row = list(r)
            for i, proc in self.result_procs:
                if row[i] is not None:
                    row[i] = proc(row[i])
            out.append(tuple(row))
        return out


def _maps_none_to_none(proc: Callable[[Any], Any]) -> bool:
    try:
        return proc(None) is None
    except Exception:  # a converter that cannot take None: always call it, as SQLAlchemy would
        return False


_cache: dict[tuple[Any, ...], Direct | None] = {}
# Keyed by the statement object: the hot path's statements are module-level constants and hit every time,
# but a statement built per call (a rare one-off update) would add an entry per call. Bounded, so such
# callers cost a compile, never memory that grows with uptime.
MAX_COMPILED = 1024


def compile_direct(stmt: Executable, dialect: Any, keys: Sequence[str] | None = None) -> Direct | None:
    """``stmt`` compiled for ``dialect`` (an INSERT for the columns ``keys``), or None if it must not run direct."""
    cache_key = (stmt, dialect.name, tuple(keys) if keys is not None else None)
    try:
        return _cache[cache_key]
    except KeyError:
        pass
    direct = _build(stmt, dialect, keys)
    if len(_cache) >= MAX_COMPILED:
        _cache.clear()
    _cache[cache_key] = direct
    return direct


def _build(stmt: Executable, dialect: Any, keys: Sequence[str] | None) -> Direct | None:
    is_insert = isinstance(stmt, Insert)
    compiled = stmt.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=list(keys) if is_insert and keys is not None else None
    )
    if compiled.insert_prefetch or compiled.update_prefetch or "POSTCOMPILE" in compiled.string:
        return None  # Python-side defaults or expanding parameters: SQLAlchemy's execution fills those in
    result_procs = []
    for i, entry in enumerate(getattr(compiled, "_result_columns", None) or ()):
        proc = entry[3]._cached_result_processor(dialect, None)
        if proc is not None:
            result_procs.append((i, proc))  # e.g. JSON columns on SQLite: text on the way out, parsed here
    processors: dict[str, Any] = dict(compiled._bind_processors)
    constants: dict[str, Any] = {}
    for bind, name in compiled.bind_names.items():
        if bind.callable is not None:
            return None
        if not bind.required:  # a literal in the statement (``state="done"``, ``lease_owner=None``, ``+ 1``)
            constants[name] = bind.value
    if dialect.positional:
        names: Iterable[str] = compiled.positiontup or ()
    else:
        names = dict.fromkeys(compiled.bind_names.values())
    escaped = getattr(compiled, "escaped_bind_names", None) or {}
    if escaped:
        return None
    return Direct(compiled.string, bool(dialect.positional), list(names), processors, constants, result_procs)


def dbapi_cursor(conn: Connection) -> Any:
    """A cursor of the raw driver connection under ``conn`` (same transaction)."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
