"""PostgreSQL: the rows a batch queues for one INSERT go in as one statement, stored as they would one by one.

A statement-level trigger counts the INSERT statements the server runs; the rows read back as the single-row
path stores them (JSON text, NULLs, booleans, 64-bit integers), their serial keys in queue order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from openbloo.config import database_urls
from openbloo.db.batch import Batch
from openbloo.db.direct import Prepared, compile_rows_statement
from openbloo.db.engine import make_sync_engine
from openbloo.db.writer import run_units

meta = MetaData()
notes = Table(
    "rows_insert_notes",
    meta,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("name", String(8), nullable=False),
    Column("body", JSON, nullable=True),
    Column("flag", Boolean, nullable=True),
    Column("big", BigInteger, nullable=True),
    Column("note", Text, nullable=True),
    Column("counted", BigInteger, nullable=False, default=7),  # a Python-side default
)
COLUMNS = ("name", "body", "flag", "big", "note", "counted")
NOTE = Prepared.insert(notes, COLUMNS)
NOTE_OF = Prepared(  # an INSERT ... VALUES of expressions of parameters
    insert(notes).values(
        name=bindparam("b_name"), big=bindparam("b_big"), note=func.upper(bindparam("b_note", type_=Text)), counted=5
    ),
    ("b_name", "b_big", "b_note"),
)

ROWS: list[tuple[Any, ...]] = [
    ("a'\"\\", {"z": 1, "a": [1, "é\\", None], "n": {"deep": True}}, True, 2**62, "日本\n\t", 0),
    ("b", None, False, None, None, 1),
    ("c", [3, "x"], None, -(2**40), "", 2),
    ("d", "just a string", True, 0, "{not json}", 3),
]


@pytest.fixture
def engine(postgres_database: str) -> Iterator[Engine]:
    engine = make_sync_engine(database_urls(postgres_database))
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as conn:  # counts the INSERT statements the server runs on the table
        conn.execute(text("CREATE TABLE rows_insert_statements (n bigint NOT NULL)"))
        conn.execute(text("INSERT INTO rows_insert_statements VALUES (0)"))
        conn.execute(
            text(
                "CREATE FUNCTION rows_insert_count() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN UPDATE rows_insert_statements SET n = n + 1; RETURN NULL; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER rows_insert_count AFTER INSERT ON rows_insert_notes"
                " FOR EACH STATEMENT EXECUTE FUNCTION rows_insert_count()"
            )
        )
    try:
        yield engine
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE rows_insert_statements"))
        meta.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP FUNCTION rows_insert_count()"))
        engine.dispose()


def _statements(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT n FROM rows_insert_statements")).scalar_one())


def _stored(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT name, body::text, body IS NULL, flag, big, note, counted"
                    " FROM rows_insert_notes ORDER BY seq"
                )
            )
        ]


def _one_by_one_then_together(
    engine: Engine, prepared: Prepared, sets: list[tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], int, list[tuple[Any, ...]], int]:
    """The rows ``sets`` of ``prepared`` store, flushed one at a time (the single-row statement), and then,
    anew, queued together; with the INSERT statements the server ran for each."""

    def run(flush_each: bool) -> tuple[list[tuple[Any, ...]], int]:
        with engine.begin() as conn:
            conn.execute(notes.delete())
        before = _statements(engine)

        def unit(batch: Batch) -> None:
            for values in sets:
                batch.add(prepared, values)
                if flush_each:
                    batch.flush()

        assert run_units(engine, [unit]) == [(True, None)]
        return _stored(engine), _statements(engine) - before

    single, single_statements = run(True)
    together, together_statements = run(False)
    return single, single_statements, together, together_statements


def test_queued_rows_are_one_statement_stored_as_one_by_one(engine: Engine) -> None:
    single, single_statements, together, statements = _one_by_one_then_together(engine, NOTE, ROWS)
    assert (single_statements, statements) == (len(ROWS), 1)
    assert together == single  # same values, same JSON text, in queue order
    assert [r[0] for r in single] == [r[0] for r in ROWS]


def test_rows_queued_as_dicts_are_one_statement(engine: Engine) -> None:
    def together(batch: Batch) -> None:
        batch.insert_later(notes, {"name": "p", "body": {"k": 1}, "flag": None, "counted": 1})
        batch.insert_later(notes, {"name": "q", "body": None, "flag": True, "counted": 2})
        batch.insert_later(notes, {"name": "r", "note": "x", "counted": 3})

    before = _statements(engine)
    assert run_units(engine, [together]) == [(True, None)]
    assert _statements(engine) == before + 1
    # Rows of one statement bind every column any of them sets: a None for the others, which a JSON column
    # stores as JSON null (as the executemany of these rows did), any other as NULL.
    assert _stored(engine) == [
        ("p", '{"k":1}', False, None, None, None, 1),
        ("q", "null", False, True, None, None, 2),
        ("r", "null", False, None, None, "x", 3),
    ]


def test_a_value_too_long_fails_its_own_unit_only(engine: Engine) -> None:
    def note(name: str) -> Any:
        def unit(batch: Batch) -> str:
            batch.add(NOTE, (name, None, None, None, None, 0))
            return name

        return unit

    outcomes = run_units(engine, [note("fine"), note("far too long"), note("ok")])
    assert [ok for ok, _ in outcomes] == [True, False, True]
    assert "too long" in str(outcomes[1][1])
    assert [r[0] for r in _stored(engine)] == ["fine", "ok"]


def test_an_insert_of_expressions_is_one_statement_stored_as_one_by_one(engine: Engine) -> None:
    sets: list[tuple[Any, ...]] = [("x", 2**62, "été"), ("y", None, None), ("z", -1, "a'b")]
    single, single_statements, together, statements = _one_by_one_then_together(engine, NOTE_OF, sets)
    assert (single_statements, statements) == (3, 1)
    assert together == single
    assert single == [
        ("x", None, True, None, 2**62, "ÉTÉ", 5),
        ("y", None, True, None, None, None, 5),
        ("z", None, True, None, -1, "A'B", 5),
    ]


def test_only_a_plain_insert_on_postgresql_is_compiled_so() -> None:
    pg = postgresql.psycopg.dialect()
    assert compile_rows_statement(insert(notes), pg, COLUMNS, columns=True) is not None
    assert compile_rows_statement(insert(notes), sqlite.dialect(), COLUMNS, columns=True) is None
    assert compile_rows_statement(postgresql.insert(notes).on_conflict_do_nothing(), pg, COLUMNS, columns=True) is None
    assert compile_rows_statement(insert(notes).returning(notes.c.seq), pg, COLUMNS, columns=True) is None
    assert (
        compile_rows_statement(insert(notes), pg, ("name",), columns=True) is None
    )  # ``counted`` from its Python default
    assert compile_rows_statement(NOTE_OF.stmt, pg, NOTE_OF.names) is not None
    assert compile_rows_statement(NOTE_OF.stmt, sqlite.dialect(), NOTE_OF.names) is None
    # An UPDATE stays an executemany; a parameter SQLAlchemy converts (JSON) cannot be read from the rows.
    set_big = update(notes).where(notes.c.name == bindparam("b_name")).values(big=bindparam("b_big"))
    assert compile_rows_statement(set_big, pg, ("b_name", "b_big")) is None
    with_json = insert(notes).values(name=bindparam("b_name"), body=bindparam("b_body", type_=JSON), counted=1)
    assert compile_rows_statement(with_json, pg, ("b_name", "b_body")) is None
