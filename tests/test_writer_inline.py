"""On a SQLite file the event loop that started the writer runs its own batches, unless something else writes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Column, Engine, Integer, MetaData, Table, func, select

from openbloo.config import database_urls
from openbloo.db.batch import Batch
from openbloo.db.engine import make_sync_engine
from openbloo.db.writer import Writer

meta = MetaData()
rows = Table("inline_test_rows", meta, Column("id", Integer, primary_key=True))


def _engine(tmp_path: Path) -> Engine:
    engine = make_sync_engine(database_urls(f"sqlite:///{tmp_path / 'w.db'}"))
    meta.create_all(engine)
    return engine


def _insert_and_name_thread(n: int) -> Callable[[Batch], int]:
    def unit(batch: Batch) -> int:
        batch.insert_later(rows, {"id": n})
        return threading.get_ident()

    return unit


def test_batches_of_the_starting_loop_run_on_it_together_and_commit(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    writer = Writer(engine)
    assert writer.inline

    async def main() -> list[int]:
        writer.start()
        try:
            return list(await asyncio.gather(*(writer.run(_insert_and_name_thread(i)) for i in range(50))))
        finally:
            writer.stop()

    threads = asyncio.run(main())
    assert set(threads) == {threading.get_ident()}, "a batch of the home loop ran on another thread"
    assert writer.batches == 1 and writer.units == 50  # submitted in one turn of the loop: one transaction
    with engine.connect() as conn:  # committed: another connection sees every row
        assert conn.execute(select(func.count()).select_from(rows)).scalar_one() == 50
    engine.dispose()


def _submit_on_successive_turns(writer: Writer, first: int, turns: int) -> None:
    """A unit now, and one at each of the next ``turns`` turns of the running loop (requests arriving apart)."""
    loop = asyncio.get_running_loop()

    def one(n: int) -> None:
        writer.submit(_insert_and_name_thread(n))
        if n < first + turns:
            loop.call_soon(one, n + 1)

    one(first)


async def _batch_of(writer: Writer, ids: range) -> None:
    """Units submitted in one turn of the loop: one batch of their own."""
    await asyncio.gather(*(writer.run(_insert_and_name_thread(i)) for i in ids))


def test_after_a_batch_with_company_the_next_gathers_the_units_that_keep_coming(tmp_path: Path) -> None:
    engine = _engine(tmp_path)

    async def main(writer: Writer, before: range, first: int) -> None:
        writer.start()
        try:
            await _batch_of(writer, before)
            _submit_on_successive_turns(writer, first, 5)
            while writer.units < len(before) + 6:
                await asyncio.sleep(0.01)
        finally:
            writer.stop()

    # Generous windows, so that the test does not depend on how fast a turn of the loop is here.
    busy = Writer(engine, gather_quiet=0.2, gather_max=5.0)
    asyncio.run(main(busy, range(2), 10))
    assert (busy.batches, busy.units) == (2, 8), "units that came on the next turns made batches of their own"
    # After a batch of one unit, the next batch runs on the first turn: the units that follow make their own.
    one_at_a_time = Writer(engine, gather_quiet=0.2, gather_max=5.0)
    asyncio.run(main(one_at_a_time, range(20, 21), 30))
    assert one_at_a_time.batches > 2
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rows)).scalar_one() == 15
    engine.dispose()


def test_gathering_ends_after_gather_max_and_a_lone_unit_waits_gather_quiet_only_after_company(
    tmp_path: Path,
) -> None:
    engine = _engine(tmp_path)

    async def endless(writer: Writer) -> tuple[float, int]:
        writer.start()
        loop = asyncio.get_running_loop()
        try:
            await _batch_of(writer, range(2))
            started = time.monotonic()
            first = writer.run(_insert_and_name_thread(2))
            n = 3

            def more() -> None:  # a unit every 10 ms, until the gathered batch has run
                nonlocal n
                writer.submit(_insert_and_name_thread(n))
                n += 1
                if writer.batches == 1:
                    loop.call_later(0.01, more)

            loop.call_later(0.01, more)
            await first
            return time.monotonic() - started, n - 2
        finally:
            writer.stop()

    waited, submitted = asyncio.run(endless(Writer(engine, gather_quiet=10.0, gather_max=0.3)))
    assert 0.3 <= waited < 3.0, waited  # units kept coming: the batch ran once gather_max had passed
    assert submitted > 2

    async def alone(writer: Writer) -> tuple[float, float]:
        writer.start()
        try:
            await _batch_of(writer, range(100, 102))
            started = time.monotonic()
            await _batch_of(writer, range(102, 103))  # after company: waits gather_quiet
            after_company = time.monotonic() - started
            started = time.monotonic()
            await _batch_of(writer, range(103, 104))  # after a lone unit: runs at once
            return after_company, time.monotonic() - started
        finally:
            writer.stop()

    after_company, after_lone = asyncio.run(alone(Writer(engine, gather_quiet=1.0, gather_max=10.0)))
    assert 1.0 <= after_company < 5.0, after_company
    assert after_lone < 0.5, after_lone
    engine.dispose()


def test_a_held_write_lock_sends_the_batch_to_the_thread_and_the_loop_keeps_running(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    writer = Writer(engine)
    # Another process (here: another open file, which flock treats the same way) is writing.
    fd = os.open(str(tmp_path / "w.db") + "-writelock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)

    async def main() -> tuple[int, int, float]:
        writer.start()
        try:
            started = time.monotonic()
            pending = asyncio.ensure_future(writer.run(_insert_and_name_thread(1)))
            ticks = 0
            while time.monotonic() - started < 0.3:  # the loop is not blocked while the unit waits for the lock
                await asyncio.sleep(0.01)
                ticks += 1
            assert not pending.done()
            fcntl.flock(fd, fcntl.LOCK_UN)
            ran_on = await pending
            return ran_on, ticks, time.monotonic() - started
        finally:
            writer.stop()

    try:
        ran_on, ticks, waited = asyncio.run(main())
    finally:
        os.close(fd)
    assert ran_on != threading.get_ident(), "the unit ran on the event loop while the lock was held"
    assert ticks >= 10 and waited >= 0.3
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rows)).scalar_one() == 1
    engine.dispose()


def test_other_loops_and_units_left_at_stop_go_through_the_thread(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    writer = Writer(engine)
    home_ran: list[int] = []

    async def home() -> None:
        writer.start()
        # Submitted, then the writer stops before the loop gets to run the batch: the thread runs it.
        fut = writer.submit(_insert_and_name_thread(1))
        writer.stop()
        home_ran.append(await fut)

    asyncio.run(home())
    assert home_ran and home_ran[0] != threading.get_ident()

    outside = Writer(engine)
    outside.start()  # outside any event loop: no home loop, every batch on the thread
    try:
        other = asyncio.run(outside.run(_insert_and_name_thread(2)))
    finally:
        outside.stop()
    assert other != threading.get_ident()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rows)).scalar_one() == 2
    engine.dispose()


def test_postgresql_batches_stay_on_the_thread(postgres_database: str) -> None:
    engine = make_sync_engine(database_urls(postgres_database))
    writer = Writer(engine)
    assert not writer.inline

    async def main() -> int:
        writer.start()
        try:
            return int(await writer.run(lambda _batch: threading.get_ident()))
        finally:
            writer.stop()

    assert asyncio.run(main()) != threading.get_ident()
    engine.dispose()
