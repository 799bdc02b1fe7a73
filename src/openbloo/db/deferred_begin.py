"""The deferred BEGIN: a PostgreSQL batch's transaction opened with its first statements, not on its own.

A connection marked by :func:`deferred_begin` has no transaction yet; whoever sends its first statement
sends ``BEGIN`` before it (the batch, in the pipeline of its first statements; the engine-level listener of
:mod:`openbloo.db.batch`, before a statement of SQLAlchemy's own), once :func:`take_begin` says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection

# Set in a connection's info while its transaction's BEGIN is yet to be sent (then False: begun by the batch).
_BEGIN_DEFERRED = "openbloo_begin_deferred"


@contextlib.contextmanager
def deferred_begin(conn: Connection) -> Iterator[None]:
    """Open the transaction of ``conn`` (a PostgreSQL connection in driver autocommit mode) with the batch's
    first statement instead of on its own.

    psycopg begins a transaction with a BEGIN it waits for, a round trip before the batch's first statement,
    and commits with a COMMIT it waits for after the batch's writes: two of an accepting batch's five round
    trips once its lookups went out together (docs/benchmarks.md, change 51). In autocommit mode the driver
    sends neither: the batch sends BEGIN in the pipeline of its first statements (or before any statement of
    SQLAlchemy's own) and COMMIT in its flush's pipeline; the driver's ``commit()``, called when the
    connection's transaction block ends, then finds nothing open, or commits what no flush ended.
    """
    conn.info[_BEGIN_DEFERRED] = True
    try:
        yield
    finally:  # the connection goes back to plain use (and to the pool) without the mark
        conn.info.pop(_BEGIN_DEFERRED, None)


def begin_deferred(conn: Connection) -> bool:
    """Whether ``conn``'s BEGIN is still to be sent."""
    return bool(conn.info.get(_BEGIN_DEFERRED))


def take_begin(conn: Any) -> bool:
    """Whether the caller must send ``conn``'s BEGIN now, before its own statement; the mark then says the batch
    opened the transaction (and so ends it)."""
    if conn.info.get(_BEGIN_DEFERRED):
        conn.info[_BEGIN_DEFERRED] = False
        return True
    return False


def begun_by_batch(conn: Connection) -> bool:
    """Whether the batch sent ``conn``'s BEGIN (and so must send its COMMIT)."""
    return conn.info.get(_BEGIN_DEFERRED) is False
