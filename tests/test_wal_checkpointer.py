"""The checkpointer thread lets a busy writer's log start again from its beginning (openbloo.db.engine).

SQLite restarts the write-ahead log only when a writer begins with every frame already copied into the
database. A writer committing every moment never met that between passes a tenth of a second apart: its log
grew until the writer's own backstop checkpoint ran inside a commit, on the event loop. Here the writer has
no backstop at all, so the log restarts only if the checkpointer's passes let it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from openbloo.db.engine import WalCheckpointer


def _log_generation(path: Path) -> int:
    """The WAL header's checkpoint sequence number: it grows by one each time the log starts again."""
    with open(f"{path}-wal", "rb") as f:
        return int.from_bytes(f.read(16)[12:16], "big")


def _writer(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # no backstop: only the checkpointer's passes move the log
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
    return conn


def _commit(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    for _ in range(4):
        conn.execute("INSERT INTO t (v) VALUES (?)", (os.urandom(3000),))
    conn.execute("COMMIT")


def test_a_busy_writers_log_restarts_without_its_backstop(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    writer = _writer(path)
    _commit(writer)
    first = _log_generation(path)
    checkpointer = WalCheckpointer(str(path), catch_up_frames=400)
    checkpointer.start()
    try:
        deadline = time.monotonic() + 20
        commits = 0
        while _log_generation(path) == first and time.monotonic() < deadline:
            _commit(writer)  # back to back, with the short gaps of a writer between two batches
            commits += 1
            time.sleep(0.0005)
        restarted = _log_generation(path) != first
    finally:
        checkpointer.stop()
        writer.close()
    assert restarted, f"the log never started again in {commits} commits"


def test_an_idle_long_log_is_not_polled(tmp_path: Path) -> None:
    path = tmp_path / "idle.db"
    writer = _writer(path)
    for _ in range(200):  # a log longer than the catch-up length, then nothing more
        _commit(writer)
    checkpointer = WalCheckpointer(str(path), interval=0.05, catch_up_frames=100)
    checkpointer.start()
    try:
        time.sleep(0.3)  # the first passes copy the log
        before = checkpointer.passes
        time.sleep(0.5)
        idle_passes = checkpointer.passes - before
    finally:
        checkpointer.stop()
        writer.close()
    assert 0 < idle_passes <= 15, idle_passes  # every 50 ms, not every millisecond
