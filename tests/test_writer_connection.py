"""The writer thread keeps one connection across batches, and SQLite's WAL is checkpointed beside it."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, text

from openbloo.config import database_urls
from openbloo.db.batch import Batch
from openbloo.db.engine import WRITER_AUTOCHECKPOINT_PAGES, make_sync_engine
from openbloo.db.writer import HeldConnection, Writer

meta = MetaData()
rows = Table("writer_test_rows", meta, Column("id", Integer, primary_key=True), Column("pad", Integer, nullable=False))


def _db_file_pages(path: Path) -> int:
    """The page count in the main file's own header: what checkpoints have written, not what the WAL holds."""
    with path.open("rb") as f:
        header = f.read(100)
    return int(struct.unpack(">I", header[28:32])[0]) if len(header) == 100 else 0


def _connection_of(batch: Batch) -> int:
    return id(batch.conn.connection.dbapi_connection)


def _count(batch: Batch) -> int:
    return int(batch.conn.execute(text("SELECT count(*) FROM writer_test_rows")).scalar_one())


async def _run(writer: Writer, unit: Any) -> Any:
    return await writer.run(unit)


def test_one_connection_across_batches_and_a_clean_one_after_a_failure(tmp_path: Path) -> None:
    engine = make_sync_engine(database_urls(f"sqlite:///{tmp_path / 'w.db'}"))
    meta.create_all(engine)
    writer = Writer(engine)
    writer.start()
    try:
        seen = [asyncio.run(_run(writer, _connection_of)) for _ in range(3)]
        assert len(set(seen)) == 1, "each batch took a connection of its own"

        def duplicate_key(batch: Batch) -> None:
            batch.insert_later(rows, {"id": 1, "pad": 0})
            batch.insert_later(rows, {"id": 1, "pad": 0})

        with pytest.raises(Exception, match="UNIQUE"):
            asyncio.run(_run(writer, duplicate_key))
        # The failed batch left nothing behind, and the next one runs on a clean transaction.
        assert asyncio.run(_run(writer, _count)) == 0
        asyncio.run(_run(writer, lambda b: b.insert_later(rows, {"id": 1, "pad": 0})))
        assert asyncio.run(_run(writer, _count)) == 1
        # The held connection is the writer's own: it checks for an auto-checkpoint far above SQLite's 1,000.
        pages = asyncio.run(_run(writer, lambda b: b.conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one()))
        assert pages == WRITER_AUTOCHECKPOINT_PAGES
    finally:
        writer.stop()
        engine.dispose()


def test_the_wal_reaches_the_database_file_without_the_writer_checkpointing(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    engine = make_sync_engine(database_urls(f"sqlite:///{path}"))
    meta.create_all(engine)
    engine.dispose()
    before = _db_file_pages(path)
    writer = Writer(engine)
    writer.start()
    try:

        def many_rows(batch: Batch) -> None:
            for _ in range(200):
                batch.insert_later(rows, {"pad": 7 * 10**17})

        for _ in range(20):  # 4,000 rows: a few dozen pages, far below the writers' own auto-checkpoint
            asyncio.run(_run(writer, many_rows))
        deadline = time.monotonic() + 5
        while _db_file_pages(path) <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _db_file_pages(path) > before, "no checkpoint wrote the WAL's pages into the database file"
    finally:
        writer.stop()
        engine.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM writer_test_rows").fetchone()[0] == 4000


def test_a_connection_the_server_dropped_is_replaced(postgres_database: str) -> None:
    engine = make_sync_engine(database_urls(postgres_database))
    meta.create_all(engine)
    writer = Writer(engine)
    writer.start()
    try:
        backend = asyncio.run(_run(writer, lambda b: b.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        # The held connection is dead. After an idle second the writer goes back to the pool, whose
        # pre-ping finds that out: the next batch runs on a new connection and commits.
        time.sleep(HeldConnection.IDLE_SECONDS + 0.2)
        asyncio.run(_run(writer, lambda b: b.insert_later(rows, {"pad": 1})))
        again = asyncio.run(_run(writer, lambda b: b.conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
        assert again != backend
        # Dropped while busy (no idle second): the batch fails on the dead connection and runs once more on a
        # new one, as any batch that fails at flush or commit does; the dead connection is not used again.
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": again})
        pids: list[int] = []

        def backend_pid(b: Batch) -> int:
            pids.append(b.conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            return pids[-1]

        third = asyncio.run(_run(writer, backend_pid))
        assert pids == [third] and third not in (backend, again)
    finally:
        writer.stop()
        meta.drop_all(engine)
        engine.dispose()
