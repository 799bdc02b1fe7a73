"""The events table keeps no index beyond its id's (migration 0009): an event is read only through its webhook
deliveries, by id, and the indexes by message and by organization took two entries of every event for no
query. A query that reads events another way should bring its index back with it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from openbloo.config import database_urls
from openbloo.db.migrate import upgrade
from openbloo.events.deliveries import _CHOSEN
from tests.helpers import sqlite_plan


def _indexes(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[1] for row in conn.execute("PRAGMA index_list('events')")}


def test_events_keep_only_the_index_of_their_id_and_deliveries_read_them_through_it(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    upgrade(database_urls(f"sqlite:///{db}"))
    assert _indexes(db) == {"sqlite_autoindex_events_1"}  # the unique id
    stmt, params = _CHOSEN([1, 2, 3])
    plan = sqlite_plan(db, stmt, params)
    assert "SEARCH events USING INDEX sqlite_autoindex_events_1 (id=?)" in plan, plan
