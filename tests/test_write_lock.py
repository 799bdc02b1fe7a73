"""SQLite writers of different processes queue on one lock file: a writer waits exactly while another holds it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from openbloo.db.batch import Batch
from openbloo.db.engine import SqliteWriteLock, write_lock
from openbloo.db.writer import run_unit

HOLDER = """
import sys, time
from openbloo.db.engine import SqliteWriteLock
with SqliteWriteLock(sys.argv[1]).held():
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


def _insert(batch: Batch) -> int:
    batch.conn.execute(text("INSERT INTO t (v) VALUES (1)"))
    return int(batch.conn.execute(text("SELECT count(*) FROM t")).scalar_one())


def test_a_write_waits_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    lock_path = str(db) + "-writelock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lock_path, "0.6"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        assert run_unit(engine, _insert) == 1
        waited = time.monotonic() - started
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.wait(10)
    assert waited >= 0.4, f"the write did not wait for the other process's lock ({waited:.3f} s)"
    assert Path(lock_path).exists()
    # Released: the next write goes straight through.
    started = time.monotonic()
    assert run_unit(engine, _insert) == 2
    assert time.monotonic() - started < 0.4


def test_threads_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    import threading

    lock = SqliteWriteLock(str(tmp_path / "x-writelock"))
    inside = 0
    most = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        for _ in range(50):
            with lock.held():
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most == 1


def test_no_lock_where_sqlite_files_are_not_involved() -> None:
    memory = create_engine("sqlite://")
    with write_lock(memory):
        pass  # a null context: nothing to create, nothing to wait for
    pg = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with write_lock(pg):
        pass
