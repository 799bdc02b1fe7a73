"""The claims read pending jobs through the partial index that holds only those, by seq (migration 0010): a
claim whose WHERE no longer implied the index's predicate, or a change of the index's columns, would still
be right and would walk every message instead. (SQLite also matches a bound ``job_state = ?`` to the
predicate; PostgreSQL's generic plans need the literal, ``models.JOB_IS_PENDING``.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from openbloo.config import database_urls
from openbloo.db.migrate import upgrade
from openbloo.delivery import claims
from tests.helpers import migrated_engine, postgres_generic_plan, sqlite_plan

INDEX = "ix_messages_job_pending"


def _claim_reads() -> list[tuple[str, Any, dict[str, Any]]]:
    jobs, params = claims._PENDING_JOBS(["conv_a", "conv_b"], {"b_upto": 10})
    lease = {"b_now": 0, "b_scan": 64, "b_limit": 16, "b_worker": "w", "b_until": 1}
    # SQLite reads the due conversations and then their jobs; PostgreSQL claims in one statement.
    return [("due", claims._DUE, lease), ("jobs", jobs, params), ("claim", claims._CLAIM_PG, lease)]


def test_the_claims_find_pending_jobs_through_the_partial_index_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    upgrade(database_urls(f"sqlite:///{db}"))
    for what, stmt, params in _claim_reads()[:2]:
        plan = sqlite_plan(db, stmt, params)
        assert f"USING INDEX {INDEX}" in plan or f"USING COVERING INDEX {INDEX}" in plan, f"{what}: {plan}"


def test_the_claims_find_pending_jobs_through_the_partial_index_on_postgresql(postgres_database: str) -> None:
    with migrated_engine(postgres_database) as engine:
        for what, stmt, params in _claim_reads():
            plan = postgres_generic_plan(engine, stmt, params)
            # The claim walks the index for its window of pending jobs, and reaches the leased conversations' jobs
            # and their first jobs by key (arrays of seqs), never by joining the window with the conversations: a
            # plan made while the tables were small ran such a join once per conversation (0.9 s a claim).
            assert plan.count(INDEX) >= (2 if what == "claim" else 1), f"{what}: {plan}"
            if what == "claim":
                assert plan.count("Index Cond: (seq = ANY") == 2, plan


def test_a_job_is_found_by_its_transport_reference_through_the_message_id_index(tmp_path: Path) -> None:
    # The reference is the message's id (migration 0008 dropped the reference's own index; 0010 put the job
    # in the message's row).
    from openbloo.devices.bluebubbles import _JOB_BY_REF

    db = tmp_path / "jobs.db"
    upgrade(database_urls(f"sqlite:///{db}"))
    plan = sqlite_plan(db, _JOB_BY_REF, {"ref": "msg_x", "number": "num_x"})
    assert "SEARCH messages USING INDEX sqlite_autoindex_messages_1" in plan, plan


def test_the_pending_index_holds_pending_jobs_only(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    upgrade(database_urls(f"sqlite:///{db}"))
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        sql = conn.exec_driver_sql(f"SELECT sql FROM sqlite_master WHERE name = '{INDEX}'").scalar_one()
    engine.dispose()
    assert "WHERE job_state = 'pending'" in sql, sql
