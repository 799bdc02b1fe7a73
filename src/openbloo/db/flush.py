"""A batch's flush: how the writes its units queued become driver calls.

The batch (:mod:`openbloo.db.batch`) keeps the queue and its per-unit bookkeeping; this module only turns the
queue into statements, in the queue's order: the last set of each row where the units said a set writes a
row in full, the sets of an UPDATE in their rows' key order on PostgreSQL, an INSERT's rows with one set of
columns, and on PostgreSQL many sets as one statement over an array of rows where the statement allows it.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Executable, Table, insert
from sqlalchemy.sql.dml import Insert

from openbloo.db.direct import Prepared, RowsStatement, compile_direct, compile_rows_statement, row_key_of

# The queue: statement key → (order, statement, parameter sets): dicts for an Executable, tuples for a Prepared.
Pending = dict[Any, tuple[int, Any, list[Any]]]


def write_queued(conn: Connection, cur: Any, pending: Pending, last_per: dict[Any, Any]) -> None:
    """Run every queued statement on ``cur`` (the batch's driver cursor), lowest ``order`` first.

    ``last_per``: per key, the parameter naming the row a set writes in full (only the last such set runs).
    On PostgreSQL an UPDATE's sets run in their rows' key order (:func:`openbloo.db.direct.row_key_of`).
    """
    postgres = conn.dialect.name == "postgresql"
    for key, (_order, stmt, params) in sorted(pending.items(), key=lambda e: e[1][0]):
        field = last_per.get(key)
        if field is not None and len(params) > 1:
            params = list({p[field]: p for p in params}.values())  # the last set of each row
        if len(params) > 1 and postgres:
            row_key = stmt.row_key if isinstance(stmt, Prepared) else row_key_of(stmt)
            if row_key is not None:  # one global lock order; stable: a row's sets keep theirs
                params = sorted(params, key=itemgetter(row_key))
        if isinstance(stmt, Prepared):
            if stmt.combine is not None and len(params) > 1:
                params = stmt.combine(params)
            if len(params) > 1 and postgres:
                many = compile_rows_statement(stmt.stmt, conn.dialect, stmt.names, columns=stmt.columns)
                if _run_as_one(cur, many, params):
                    continue
            direct = stmt.compiled(conn.dialect)
            rows: Any = params if direct.as_is else [direct.params(t) for t in params]
            if len(rows) == 1:
                cur.execute(direct.sql, rows[0])
            else:
                cur.executemany(direct.sql, rows)
        elif isinstance(stmt, Insert):
            params = _same_columns(stmt, params)
            # Consecutive rows with the same columns go in one executemany; queue order is kept.
            start = 0
            while start < len(params):
                keys = params[start].keys()
                end = start + 1
                while end < len(params) and params[end].keys() == keys:
                    end += 1
                _execute_many(conn, cur, postgres, stmt, params[start:end], tuple(keys))
                start = end
        else:
            _execute_many(conn, cur, postgres, stmt, params, None)


def _execute_many(
    conn: Connection,
    cur: Any,
    postgres: bool,
    stmt: Executable,
    params: list[dict[str, Any]],
    keys: tuple[str, ...] | None,
) -> None:
    if keys is not None and len(params) > 1 and postgres:
        many = compile_rows_statement(stmt, conn.dialect, keys, columns=True)
        # Dicts keyed by column key go as they are where the keys are the column names the statement reads.
        rows = params if many is None or many.fields == keys else [tuple(p[k] for k in keys) for p in params]
        if _run_as_one(cur, many, rows):
            return
    direct = compile_direct(stmt, conn.dialect, keys)
    if direct is None:
        conn.execute(stmt, params)
        return
    if len(params) == 1:
        cur.execute(direct.sql, direct.params(params[0]))
    else:
        cur.executemany(direct.sql, [direct.params(p) for p in params])


def _run_as_one(cur: Any, many: RowsStatement | None, rows: Any) -> bool:
    """PostgreSQL: run ``many`` once for all ``rows``; False where there is no such statement (an UPDATE, a
    statement of another shape) or a value has no JSON form: the caller runs its executemany."""
    params = many.params(rows) if many is not None else None
    if many is None or params is None:
        return False
    cur.execute(many.sql, params)
    return True


def _same_columns(stmt: Insert, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with every column any of them sets, so that one executemany inserts them all in queue order.

    ``insert_later`` leaves out NULL columns, so rows of one table differ (a group message sets ``group_id``);
    a column only some rows set is bound as None for the others. A row that lacks a column which is not NULL
    by default (it relies on a Python-side default) is left as it is.
    """
    first = rows[0].keys()
    if all(r.keys() == first for r in rows):
        return rows
    columns = dict.fromkeys(k for r in rows for k in r)
    nulls = null_by_default(stmt.table)  # type: ignore[arg-type]
    out = []
    for r in rows:
        if len(r) != len(columns) and (columns.keys() - r.keys()) <= nulls:
            r = {k: r.get(k) for k in columns}
        out.append(r)
    return out


_inserts: dict[Table, Executable] = {}
_nullable: dict[Table, frozenset[str]] = {}


def null_by_default(table: Table) -> frozenset[str]:
    """The columns an INSERT may leave out instead of binding None: nullable, with no default of any kind."""
    cols = _nullable.get(table)
    if cols is None:
        cols = _nullable[table] = frozenset(
            c.key
            for c in table.columns
            if c.nullable and not c.primary_key and c.default is None and c.server_default is None
        )
    return cols


def insert_of(table: Table) -> Executable:
    """One INSERT statement object per table, so its compiled form is found again (openbloo.db.direct)."""
    stmt = _inserts.get(table)
    if stmt is None:
        stmt = _inserts[table] = insert(table)
    return stmt
