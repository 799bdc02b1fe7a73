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

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import msgspec
from sqlalchemy import JSON, Boolean, Connection, Executable, String
from sqlalchemy.sql import operators
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList
from sqlalchemy.types import NullType

T = TypeVar("T")


class Direct:
    """One statement compiled for one dialect: SQL text, parameter order, bind processors, constants."""

    __slots__ = ("_params", "as_is", "positional", "result_procs", "sql")

    def __init__(
        self,
        sql: str,
        positional: bool,
        names: list[str],
        processors: dict[str, Callable[[Any], Any]],
        constants: dict[str, Any],
        result_procs: list[tuple[int, Callable[[Any], Any]]] | None = None,
        order: Sequence[str] | None = None,
    ) -> None:
        self.sql = sql
        # (column position, result processor) for the columns SQLAlchemy would convert on the way out.
        self.result_procs = result_procs or []
        self.positional = positional
        self._params = _params_function(names, processors, constants, positional, order)
        # Values passed as a tuple that already is the driver's parameter list: nothing to convert.
        self.as_is = bool(positional and order is not None and list(order) == names and not processors)

    def params(self, values: Any) -> Sequence[Any] | dict[str, Any]:
        """The driver's parameters for one set of ``values``: a dict named as the statement's bind parameters,
        or, for a statement compiled with ``order``, a tuple of values in that order."""
        return self._params(values)

    def rows(self, fetched: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Driver rows as SQLAlchemy would return them (result processors applied), as plain tuples."""
        procs = self.result_procs
        if not procs:
            return fetched
        out = []
        for r in fetched:
            row: list[Any] | None = None  # copied only if a value needs converting (NULL JSON is the common case)
            for i, proc in procs:
                value = r[i]
                if value is not None:
                    if row is None:
                        row = list(r)
                    row[i] = proc(value)
            out.append(r if row is None else tuple(row))
        return out


def _params_function(
    names: list[str],
    processors: dict[str, Callable[[Any], Any]],
    constants: dict[str, Any],
    positional: bool,
    order: Sequence[str] | None = None,
) -> Callable[[Any], Any]:
    """A function made for one statement that turns a dict of values into the driver's parameters.

    It is generated (one expression per parameter, no loop, no intermediate list): this runs for every row
    of every flush, and a generic loop over the parameters and their converters was the largest single
    item of the writer's own Python time. Per parameter: ``values[name]`` (``values[i]`` when the values
    come as a tuple in ``order``), or the statement's literal when the caller did not pass it; SQLAlchemy's
    bind processor (JSON and the like) applied, except to None when that processor maps None to None (most
    fields of a message row are None).
    """
    namespace: dict[str, Any] = {}
    parts = []
    position = {n: i for i, n in enumerate(order)} if order is not None else None
    for i, name in enumerate(names):
        if position is not None:
            if name in position:
                get = f"v[{position[name]}]"
            elif name in constants:
                namespace[f"C{i}"] = constants[name]
                get = f"C{i}"
            else:
                raise ValueError(f"no value for the statement's parameter {name!r} in {list(order or ())}")
        elif name in constants:
            namespace[f"C{i}"] = constants[name]
            get = f"v.get({name!r}, C{i})"
        else:
            get = f"v[{name!r}]"
        proc = processors.get(name)
        if proc is None:
            expr = get
        else:
            namespace[f"P{i}"] = proc
            expr = f"(None if (x := {get}) is None else P{i}(x))" if _maps_none_to_none(proc) else f"P{i}({get})"
        parts.append(expr if positional else f"{name!r}: {expr}")
    body = f"({', '.join(parts)},)" if positional and parts else "()" if positional else f"{{{', '.join(parts)}}}"
    exec(f"def params(v):\n    return {body}\n", namespace)  # the source holds only repr()s of names
    fn: Callable[[dict[str, Any]], Any] = namespace["params"]
    return fn


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


def compile_direct(
    stmt: Executable, dialect: Any, keys: Sequence[str] | None = None, order: Sequence[str] | None = None
) -> Direct | None:
    """``stmt`` compiled for ``dialect`` (an INSERT for the columns ``keys``), or None if it must not run direct.

    ``order``: the values will come as tuples of these parameters (an INSERT's: its ``keys``), not as dicts.
    """
    cache_key = (stmt, dialect.name, tuple(keys) if keys is not None else None, tuple(order) if order else None)
    try:
        return _cache[cache_key]
    except KeyError:
        pass
    return _remember(_cache, cache_key, _build(stmt, dialect, keys, order))


def _remember(cache: dict[tuple[Any, ...], T], key: tuple[Any, ...], value: T) -> T:
    """Keep ``value`` under ``key`` in one of the bounded caches of compiled statements (emptied when full)."""
    if len(cache) >= MAX_COMPILED:
        cache.clear()
    cache[key] = value
    return value


def _build(
    stmt: Executable, dialect: Any, keys: Sequence[str] | None, order: Sequence[str] | None = None
) -> Direct | None:
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
    return Direct(compiled.string, bool(dialect.positional), list(names), processors, constants, result_procs, order)


def row_key_of(stmt: Any) -> str | None:
    """The bind parameter an UPDATE's WHERE compares a key of its table with (``id = :b_id``: the primary key or
    a column unique on its own), or None.

    On PostgreSQL a batch runs an UPDATE's parameter sets in this parameter's order, so every process's
    batches take their row locks in one global order: in arrival order, two API processes' batches that
    updated the same two chats in opposite orders deadlocked, and the server broke the cycle only after its
    ``deadlock_timeout`` (a second in which both batches, and their requests, waited). Read from the
    statement, not declared beside it, so that no UPDATE added later can forget it.
    """
    if not isinstance(stmt, Update) or stmt.whereclause is None:
        return None
    where = stmt.whereclause
    terms = where.clauses if isinstance(where, BooleanClauseList) and where.operator is operators.and_ else (where,)
    for term in terms:
        if not isinstance(term, BinaryExpression) or term.operator is not operators.eq:
            continue
        for column, value in ((term.left, term.right), (term.right, term.left)):
            one_row = getattr(column, "primary_key", False) or getattr(column, "unique", False)
            on_key = one_row and getattr(column, "table", None) is stmt.table
            if on_key and isinstance(value, BindParameter) and not value.unique:  # named, not a literal
                return str(value.key)
    return None


class Prepared:
    """A statement whose values come as tuples in a fixed order (``names``), for the rows a writer batch
    queues by the thousand (:meth:`openbloo.db.batch.Batch.add`): no dict per row, and the tuples go to the
    driver as they are where the statement needs no conversion.

    ``Prepared.insert(table, columns)`` inserts ``columns`` (the values in that order); ``Prepared(stmt,
    names)`` runs any other statement with its bind parameters ``names`` in that order. ``combine``, for a
    statement whose parameter sets add up (counters incremented by each), turns a batch's sets into fewer
    that write the same: it runs at flush, over the sets of the units that succeeded. ``row_key``: the index
    of the value an UPDATE's WHERE compares a key column with (:func:`row_key_of`), by which a batch on
    PostgreSQL orders the sets.
    """

    __slots__ = ("columns", "combine", "names", "row_key", "stmt")

    def __init__(
        self,
        stmt: Executable,
        names: Sequence[str],
        *,
        columns: bool = False,
        combine: Callable[[list[tuple[Any, ...]]], list[tuple[Any, ...]]] | None = None,
    ) -> None:
        self.stmt = stmt
        self.names = tuple(names)
        self.columns = columns  # ``names`` are the columns of a plain INSERT (made by :meth:`insert`)
        self.combine = combine
        key = row_key_of(stmt)
        self.row_key = self.names.index(key) if key is not None and key in self.names else None

    @classmethod
    def insert(cls, table: Any, columns: Sequence[str]) -> Prepared:
        from sqlalchemy import insert

        unknown = [c for c in columns if c not in table.c]
        if unknown:
            raise ValueError(f"{table.name} has no column {unknown}")
        return cls(insert(table), columns, columns=True)

    def compiled(self, dialect: Any) -> Direct:
        direct = compile_direct(self.stmt, dialect, self.names if self.columns else None, self.names)
        if direct is None:
            raise ValueError(f"{self.stmt} cannot run on the driver cursor (Python-side defaults, expanding IN)")
        return direct

    def index(self, name: str) -> int:
        return self.names.index(name)


def dbapi_cursor(conn: Connection) -> Any:
    """A cursor of the raw driver connection under ``conn`` (same transaction)."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


class RowsStatement:
    """PostgreSQL: an INSERT run once for all the rows a batch queued for it, which it reads from one JSON
    array of rows.

    ``executemany`` sends a Bind and an Execute per row, the server runs each as a statement of its own, and
    psycopg dumps each row's parameters on its own. An accepting batch inserts each of its tables' rows by
    the batch, a worker's outcome a row of ``events`` and of ``webhook_deliveries`` per status the device
    reported, the webhook sender its attempts by the dozen. A plain ``insert(table)`` becomes ``INSERT ...
    SELECT FROM json_populate_recordset(NULL::table, rows)``: msgspec encodes the rows in one call and the
    server reads each value through its column's input (a value too long for its VARCHAR is refused as the
    INSERT would refuse it). An ``INSERT ... VALUES`` of expressions of parameters (a batch's new chats and
    conversations) reads them from ``json_to_recordset``, its literals bound once. ``WITH ORDINALITY``
    keeps the queue's order for the serial keys, which the claims' order relies on.

    Measured and left aside (docs/benchmarks.md, thirteenth round): arrays (``unnest``), which psycopg dumps
    element by element in Python, costing the client more than the executemany it replaced; and UPDATEs
    ``FROM`` the rows, for which the server plans a join that cost it more than the statements it saved.
    SQLite has no use for any of it: its driver's ``executemany`` runs in-process.
    """

    __slots__ = ("constants", "fields", "sql")

    def __init__(self, sql: str, fields: tuple[str, ...], constants: dict[str, Any] | None = None) -> None:
        self.sql = sql
        # The rows' keys, in the order of a row's values: a plain INSERT's column names, else the statement's
        # per-row parameters.
        self.fields = fields
        self.constants = constants or {}

    def params(self, rows: Sequence[Sequence[Any]] | Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        """The statement's parameters for ``rows`` (tuples in ``fields`` order, or dicts keyed by ``fields``),
        or None if a value has no JSON form (the caller then runs its executemany)."""
        fields = self.fields
        try:
            encoded = _encode_rows([r if isinstance(r, dict) else dict(zip(fields, r, strict=True)) for r in rows])
        except (TypeError, msgspec.EncodeError):
            return None
        return {**self.constants, "openbloo_rows": encoded.decode()}


_encode_rows = msgspec.json.Encoder().encode
_rows_statements: dict[tuple[Any, ...], RowsStatement | None] = {}
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def compile_rows_statement(
    stmt: Executable, dialect: Any, names: Sequence[str], *, columns: bool = False
) -> RowsStatement | None:
    """:class:`RowsStatement` for ``stmt`` on PostgreSQL, else None (another dialect; a statement the driver
    cursor cannot run as it is, see :func:`compile_direct`; ON CONFLICT, RETURNING, an UPDATE; a parameter
    SQLAlchemy converts in a way the JSON text cannot stand in for).

    ``columns``: ``stmt`` is a plain ``insert(table)`` and ``names`` the keys of its columns; otherwise
    ``names`` are the statement's per-row parameters.
    """
    key = (stmt, dialect.name, tuple(names), columns)
    try:
        return _rows_statements[key]
    except KeyError:
        pass
    made: RowsStatement | None = None
    if dialect.name == "postgresql" and dialect.paramstyle == "pyformat" and isinstance(stmt, Insert):
        plain = stmt._post_values_clause is None and stmt.select is None and not (stmt._returning or stmt._multi_values)
        direct = compile_direct(stmt, dialect, names if columns else None) if plain else None
        if direct is not None and not columns:
            made = _build_rows_statement(stmt, direct, dialect, tuple(names))
        elif direct is not None and not stmt._values:  # ``insert(table)`` itself
            made = _build_rows_insert(stmt, dialect, tuple(names))
    return _remember(_rows_statements, key, made)


def _build_rows_insert(stmt: Insert, dialect: Any, columns: tuple[str, ...]) -> RowsStatement | None:
    table = stmt.table
    quote = dialect.identifier_preparer
    processors = stmt.compile(dialect=dialect, column_keys=list(columns))._bind_processors
    fields, targets, values = [], [], []
    for key in columns:
        column = table.c[key]
        name = quote.quote(column.name)
        proc = processors.get(key)
        if proc is not None and not isinstance(column.type, JSON | Boolean):
            return None  # a conversion the JSON text and the column's input cannot stand in for
        fields.append(column.name)  # json_populate_recordset reads a row's values by column name
        targets.append(name)
        if proc is not None and not _maps_none_to_none(proc):  # type: ignore[arg-type]
            # SQLAlchemy binds None to a JSON column as JSON null; the record's null would be SQL NULL.
            name = f"COALESCE({name}, 'null'::{column.type.compile(dialect=dialect)})"
        values.append(name)
    return RowsStatement(
        f"INSERT INTO {quote.format_table(table)} ({', '.join(targets)}) SELECT {', '.join(values)}"
        f" FROM json_populate_recordset(NULL::{quote.format_table(table)}, %(openbloo_rows)s::json)"
        " WITH ORDINALITY AS openbloo_set ORDER BY ordinality",
        tuple(fields),
    )


def _build_rows_statement(stmt: Insert, direct: Direct, dialect: Any, names: tuple[str, ...]) -> RowsStatement | None:
    compiled = stmt.compile(dialect=dialect)
    if any(name in compiled._bind_processors for name in names):
        return None  # a conversion (JSON, ...) the row's JSON text cannot stand in for
    types: dict[str, str] = {}
    for bind, name in compiled.bind_names.items():
        if name in names and not isinstance(bind.type, NullType):  # one use of a name may leave its type open
            types[name] = "VARCHAR" if isinstance(bind.type, String) else bind.type.compile(dialect=dialect)
    # The serial key's implicit RETURNING goes (an executemany reads none of what it returns either).
    head, sep, values = direct.sql.partition(" RETURNING ")[0].partition(" VALUES (")
    if set(types) != set(names) or not sep or not values.endswith(")"):
        return None
    # The statement's own literals (``message_count=0``) stay parameters of their own, the same for every row.
    constants = {name: bind.value for bind, name in compiled.bind_names.items() if name not in names}
    values = _PLACEHOLDER.sub(lambda m: f"openbloo_set.{m.group(1)}" if m.group(1) in names else m.group(0), values)
    record = f"json_to_recordset(%(openbloo_rows)s::json) AS ({', '.join(f'{n} {types[n]}' for n in names)})"
    sql = (
        f"{head} SELECT {values[:-1]} FROM ROWS FROM ({record})"
        f" WITH ORDINALITY AS openbloo_set({', '.join(names)}, openbloo_row) ORDER BY openbloo_row"
    )
    return RowsStatement(sql, names, constants)
