"""The claims read pending jobs through the partial indexes that hold only those (migrations 0006, 0010): a claim
whose WHERE no longer implied the indexes' predicate, or a change of the indexes' columns, would still be
right and would scan instead. (SQLite also matches a bound ``job_state = ?`` to the predicate; PostgreSQL's
generic plans need the literal, ``models.JOB_IS_PENDING``.)"""

from __future__ import annotations

from pathlib import Path

from openbloo.config import database_urls
from openbloo.db.migrate import upgrade
from openbloo.delivery import claims
from tests.helpers import sqlite_plan


def test_the_claims_find_pending_jobs_through_the_partial_indexes(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    upgrade(database_urls(f"sqlite:///{db}"))
    due = sqlite_plan(db, claims._DUE, {"b_now": 0, "b_scan": 64})
    assert "USING INDEX ix_messages_job_pending_due" in due, due
    stmt, params = claims._PENDING_JOBS(["conv_a", "conv_b"])
    jobs = sqlite_plan(db, stmt, params)
    assert "USING INDEX ix_messages_job_pending_conversation" in jobs, jobs


def test_a_job_is_found_by_its_transport_reference_through_the_message_id_index(tmp_path: Path) -> None:
    # The reference is the message's id (migration 0008 dropped the reference's own index; 0010 put the job
    # in the message's row).
    from openbloo.devices.bluebubbles import _JOB_BY_REF

    db = tmp_path / "jobs.db"
    upgrade(database_urls(f"sqlite:///{db}"))
    plan = sqlite_plan(db, _JOB_BY_REF, {"ref": "msg_x", "number": "num_x"})
    assert "SEARCH messages USING INDEX sqlite_autoindex_messages_1" in plan, plan
