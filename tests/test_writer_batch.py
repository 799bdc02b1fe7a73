"""Deferred statements of a batch: ``last_per`` runs one parameter set per row, the last one its units queued;
deferred inserts keep their queue order when their rows set different columns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, Table, bindparam, text, update

from openbloo.config import database_urls
from openbloo.db.batch import Batch
from openbloo.db.engine import make_sync_engine
from openbloo.db.writer import run_units

meta = MetaData()
rows = Table("batch_test_rows", meta, Column("id", Integer, primary_key=True), Column("v", Integer, nullable=False))
notes = Table(
    "batch_test_notes",
    meta,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("body", Integer, nullable=False),
    Column("extra", Integer, nullable=True),
    Column("counted", Integer, nullable=False, default=7),
)
SET_V = update(rows).where(rows.c.id == bindparam("b_id")).values(v=bindparam("b_v"))


def _set(row_id: int, v: int, *, fail: bool = False) -> object:
    def unit(batch: Batch) -> int:
        batch.execute_later("set_v", SET_V, {"b_id": row_id, "b_v": v}, last_per="b_id")
        if fail:
            raise ValueError("this unit changes its mind")
        return v

    return unit


def test_only_the_last_parameter_set_of_a_row_runs(tmp_path: Path) -> None:
    engine = make_sync_engine(database_urls(f"sqlite:///{tmp_path / 'b.db'}"))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(rows.insert(), [{"id": 1, "v": 0}, {"id": 2, "v": 0}])
        before = conn.execute(text("SELECT total_changes()")).scalar_one()
    units = [_set(1, 1), _set(2, 5), _set(1, 2), _set(1, 3, fail=True)]
    outcomes = run_units(engine, units)  # type: ignore[arg-type]
    assert [ok for ok, _ in outcomes] == [True, True, True, False]
    with engine.connect() as conn:
        assert dict(conn.execute(rows.select()).all()) == {1: 2, 2: 5}  # the failed unit's set is gone
    # total_changes() is per connection: the writer's pool hands the same SQLite connection back here.
    with engine.begin() as conn:
        changed = conn.execute(text("SELECT total_changes()")).scalar_one() - before
    assert changed == 2, f"{changed} row updates for two rows"
    engine.dispose()


def test_inserts_keep_queue_order_when_rows_leave_out_different_null_columns(tmp_path: Path) -> None:
    engine = make_sync_engine(database_urls(f"sqlite:///{tmp_path / 'b.db'}"))
    meta.create_all(engine)

    def unit(batch: Batch) -> None:
        # None is left out of an INSERT (NULL by default); a row that sets ``extra`` sits between two that do not.
        batch.insert_later(notes, {"body": 1, "extra": None, "counted": 0})
        batch.insert_later(notes, {"body": 2, "extra": 20, "counted": 0})
        batch.insert_later(notes, {"body": 3, "extra": None, "counted": 0})
        # A row relying on the Python-side default of ``counted`` still gets it.
        batch.insert_later(notes, {"body": 4, "extra": None})

    assert run_units(engine, [unit]) == [(True, None)]
    with engine.connect() as conn:
        got = conn.execute(notes.select().order_by(notes.c.seq)).all()
    assert [(r.body, r.extra, r.counted) for r in got] == [(1, None, 0), (2, 20, 0), (3, None, 0), (4, None, 7)]
    engine.dispose()


def _numbers_after(tmp_path: Path, name: str, batches: list[list[tuple[Any, ...]]]) -> tuple[list[Any], int]:
    """The numbers rows after running ``batches`` of NUMBER_OUTBOUND sets (one unit per set), and the row
    updates that took."""
    from openbloo.db import models as m
    from openbloo.db.migrate import upgrade
    from openbloo.messages.outbox import _NUMBER_OUTBOUND

    urls = database_urls(f"sqlite:///{tmp_path / name}")
    upgrade(urls)
    engine = make_sync_engine(urls)
    with engine.begin() as conn:
        for number_id in ("num_a", "num_b"):
            conn.execute(
                m.numbers.insert().values(
                    id=number_id,
                    organization_id="org",
                    phone_number=f"+1555{number_id}",
                    transport="simulator",
                    created_at=0,
                    day="2026-12-06",
                    day_outbound=7,
                    day_new_conversations=2,
                )
            )
        before = conn.execute(text("SELECT total_changes()")).scalar_one()

    def unit(values: tuple[Any, ...]) -> Callable[[Batch], None]:
        return lambda batch: batch.add(_NUMBER_OUTBOUND, values)

    for sets in batches:
        assert all(ok for ok, _ in run_units(engine, [unit(v) for v in sets]))
    with engine.begin() as conn:
        changed = conn.execute(text("SELECT total_changes()")).scalar_one() - before
        found = list(conn.execute(m.numbers.select().order_by(m.numbers.c.id)).all())
    engine.dispose()
    return found, changed


def test_a_batchs_sends_from_one_number_update_its_counters_once(tmp_path: Path) -> None:
    # (number, messages, time, day, new conversation): across midnight, from two numbers.
    sets = [
        ("num_a", 1, 100, "2026-12-06", 1),
        ("num_a", 3, 200, "2026-12-06", 0),
        ("num_b", 2, 250, "2026-12-06", 1),
        ("num_a", 1, 300, "2026-12-07", 1),
        ("num_a", 2, 400, "2026-12-07", 0),
    ]
    one_by_one, updates_apart = _numbers_after(tmp_path, "apart.db", [[s] for s in sets])
    together, updates_together = _numbers_after(tmp_path, "together.db", [sets])
    assert together == one_by_one
    a = together[0]._mapping
    assert (a["outbound_count"], a["day"], a["day_outbound"], a["day_new_conversations"]) == (7, "2026-12-07", 3, 1)
    assert a["last_used_at"] == a["last_message_sent"] == 400
    assert (updates_apart, updates_together) == (5, 3)  # num_a on each day, num_b once
