"""On PostgreSQL a claim leases the conversations (FOR UPDATE SKIP LOCKED), reads their pending jobs as they
were, in acceptance order, and starts each one's first due job; a job whose worker died mid-send keeps its
in-flight marker and the start time of that attempt. A cancel that a claim overtakes is refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from openbloo.db import models as m
from openbloo.db.writer import run_units
from openbloo.delivery import jobs
from openbloo.delivery.claims import claim
from openbloo.errors import ApiError
from tests.conftest import own_postgres_database
from tests.helpers import migrated_engine, org_context, planned_send

WORKER = "test-claimer"


@pytest.fixture
def own_database(postgres_database: str) -> Iterator[str]:
    """A database of this test's alone: a claim leases every due conversation it finds, other tests' too."""
    with own_postgres_database(postgres_database, "openbloo_claims") as url:
        yield url


def test_a_claim_on_postgresql_leases_reads_and_starts_the_first_jobs(own_database: str) -> None:
    with migrated_engine(own_database) as engine:
        ctx = org_context(engine, "lookups", "+15550009999")
        chats = [f"+1555060{i:04d}" for i in range(3)]
        sends = [planned_send(ctx, to, f"{to} #{n}") for n in range(2) for to in chats]
        outcomes = run_units(engine, sends)
        ids = [json.loads(o.body)["message_id"] for _, o in outcomes]
        j = m.messages
        with engine.begin() as conn:
            # A job whose worker died mid-send: its marker (and the attempt's start time) must survive the claim.
            conn.execute(
                update(j).where(j.c.id == ids[0]).values(job_lease_owner="dead", job_attempts=1, job_updated_at=1234)
            )
        now = 10**13  # every job is due
        [(ok, claimed)] = run_units(engine, [claim(WORKER, now, 60_000, 256)])
        assert ok, claimed

        mine = {c.id: c for c in claimed}
        assert len(mine) == 3 and all(c.head_started for c in mine.values())
        by_first = {c.jobs[0].outgoing.message_id: c for c in mine.values()}
        # Each conversation's jobs in acceptance order, read as they were before the claim started the first.
        assert sorted(by_first) == sorted(ids[:3])
        for c in mine.values():
            assert [job.outgoing.message_id for job in c.jobs] == [
                ids[ids.index(c.jobs[0].outgoing.message_id) + 3 * k] for k in (0, 1)
            ]
        dead = by_first[ids[0]].jobs[0]
        assert dead.in_flight and dead.outgoing.in_flight_since == 1234 and dead.outgoing.attempt == 2
        fresh = by_first[ids[1]].jobs[0]
        assert not fresh.in_flight and fresh.outgoing.attempt == 1

        with engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(select(j).where(j.c.id.in_(ids)))}
            leases = conn.execute(select(m.conversations.c.id, m.conversations.c.lease_owner)).all()
        for first in ids[:3]:  # started: ours, one attempt more; the one in flight kept its attempt's start
            assert rows[first].job_lease_owner == WORKER
        assert rows[ids[0]].job_attempts == 2 and rows[ids[0]].job_updated_at == 1234
        assert rows[ids[1]].job_attempts == 1 and rows[ids[1]].job_updated_at != 1234
        assert all(rows[later].job_lease_owner is None and rows[later].job_attempts == 0 for later in ids[3:])
        assert {cid for cid, owner in leases if owner == WORKER} == set(mine)


def test_a_cancel_that_a_claim_overtakes_is_refused_not_applied(own_database: str) -> None:
    """The cancel reads the job as nobody's, then a worker's claim starts it (commits first): the cancel's
    update finds the job started, and the message is refused as being sent instead of marked cancelled while
    a device has it."""
    with migrated_engine(own_database) as engine:
        ctx = org_context(engine, "lookups", "+15550009999")
        [(_, outcome)] = run_units(engine, [planned_send(ctx, "+15550620001", "hello")])
        mid = json.loads(outcome.body)["message_id"]
        j = m.messages
        result: list[Any] = []
        with engine.connect() as claimer:
            with claimer.begin():
                # The claim's start, not committed yet: the cancel below reads the job as it was before it.
                claimer.execute(update(j).where(j.c.id == mid).values(job_lease_owner=WORKER, job_attempts=1))
                cancel = jobs.cancel(ctx.organization_id, mid, lambda *_: True, 10**13)
                thread = threading.Thread(target=lambda: result.extend(run_units(engine, [cancel])))
                thread.start()
                thread.join(1.0)  # it waits for the claim's row lock
                assert thread.is_alive() and not result
            thread.join(10)
        [(ok, error)] = result
        assert not ok and isinstance(error, ApiError) and error.status == 409, error
        assert error.code == "message_not_cancellable"
        with engine.connect() as conn:
            job = conn.execute(select(j.c.job_state, j.c.job_lease_owner, j.c.status).where(j.c.id == mid)).one()
        assert tuple(job) == ("pending", WORKER, "queued")
