"""A batch on the writer's held connection is one transaction whatever its units do first: on PostgreSQL the
batch opens it itself (its BEGIN goes out with the first statements, its COMMIT with the flush), and a unit's
own statements, savepoints, failures and a failing flush behave as in a transaction the driver opened."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, bindparam, insert, select, update

from openbloo.config import database_urls
from openbloo.db.batch import Batch
from openbloo.db.engine import make_sync_engine
from openbloo.db.writer import HeldConnection, run_units

meta = MetaData()
cells = Table(
    f"writer_tx_{secrets.token_hex(3)}",  # the PostgreSQL database is the session's: a table of its own
    meta,
    Column("id", Integer, primary_key=True),
    Column("v", Integer, nullable=False),
)
SET = update(cells).where(cells.c.id == bindparam("b_id")).values(v=bindparam("b_v"))
GET = select(cells.c.v).where(cells.c.id == bindparam("b_id"))


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tx.db'}"
    else:
        url = str(request.getfixturevalue("postgres_database"))
    eng = make_sync_engine(database_urls(url))
    meta.create_all(eng)
    with eng.begin() as conn:
        conn.execute(cells.delete())
        conn.execute(insert(cells), [{"id": i, "v": 0} for i in range(1, 6)])
    try:
        yield eng
    finally:
        meta.drop_all(eng)
        eng.dispose()


def _values(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        return {int(r.id): int(r.v) for r in conn.execute(select(cells))}


def test_units_writing_first_in_every_way_commit_together_and_fail_alone(engine: Engine) -> None:
    held = HeldConnection(engine)

    def core_first(batch: Batch) -> int:  # SQLAlchemy's own statement is the transaction's first
        batch.conn.execute(update(cells).where(cells.c.id == 1).values(v=11))
        return 1

    def direct_then_fails(batch: Batch) -> None:  # an immediate write, then a failure: the batch is re-run
        batch.execute(SET, {"b_id": 2, "b_v": 99})
        raise ValueError("changed its mind after writing")

    def savepoint_then_fails(batch: Batch) -> None:  # its savepoint undoes its writes alone
        batch.savepoint()
        batch.conn.execute(update(cells).where(cells.c.id == 3).values(v=99))
        raise ValueError("changed its mind inside its savepoint")

    def reads_then_defers(batch: Batch) -> int:
        (v,) = batch.first(GET, {"b_id": 4}) or (None,)
        batch.execute_later("set", SET, {"b_id": 4, "b_v": int(v or 0) + 44})
        return 4

    def only_defers(batch: Batch) -> int:
        batch.execute_later("set", SET, {"b_id": 5, "b_v": 55})
        return 5

    units = [core_first, direct_then_fails, savepoint_then_fails, reads_then_defers, only_defers]
    outcomes = run_units(held, units)  # type: ignore[arg-type]
    assert [ok for ok, _ in outcomes] == [True, False, False, True, True]
    assert _values(engine) == {1: 11, 2: 0, 3: 0, 4: 44, 5: 55}
    # The connection is fine for the next batch, which finds what the last one committed.
    assert run_units(held, [reads_then_defers]) == [(True, 4)]
    assert _values(engine)[4] == 88
    held.close()


def test_a_batch_whose_flush_fails_is_run_again_unit_by_unit(engine: Engine) -> None:
    held = HeldConnection(engine)

    def add(row_id: int) -> Any:
        def unit(batch: Batch) -> int:
            batch.insert_later(cells, {"id": row_id, "v": row_id})
            return row_id

        return unit

    # Row 3 exists: the batch's flush fails on its key, then each unit runs alone and only that one fails.
    outcomes = run_units(held, [add(10), add(3), add(11)])
    assert [ok for ok, _ in outcomes] == [True, False, True]
    values = _values(engine)
    assert values[10] == 10 and values[11] == 11 and values[3] == 0
    assert run_units(held, [add(12)]) == [(True, 12)]  # and the held connection still works
    held.close()


def test_a_batch_that_reads_and_writes_nothing_leaves_no_transaction_open(engine: Engine) -> None:
    held = HeldConnection(engine)
    assert run_units(held, [lambda batch: 7]) == [(True, 7)]
    assert run_units(held, [lambda batch: batch.first(GET, {"b_id": 1})]) == [(True, (0,))]
    with held.begin() as conn:
        if engine.dialect.name == "postgresql":
            raw: Any = conn.connection.dbapi_connection
            assert raw.info.transaction_status.name == "IDLE"  # nothing sent yet, nothing left open
    held.close()
