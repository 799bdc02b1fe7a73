"""A claim walks the pending jobs in acceptance order (openbloo.delivery.claims), on both stores: it leases the
conversations whose next job is due and hands over each one's jobs in order; a conversation whose next job
waits for its retry is left alone, even with later jobs due; a window that was full marks its conversations
to be claimed again, and the next claim finds the jobs it left out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from openbloo.config import database_urls
from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.db.engine import make_sync_engine
from openbloo.db.writer import HeldConnection, run_units
from openbloo.delivery import jobs
from openbloo.delivery.claims import ClaimedConversation, claim
from tests.conftest import own_postgres_database
from tests.helpers import libpq_trace, migrated_engine, org_context, planned_send

WORKER = "test-claims"
NOW = 10**13  # every job accepted by the test is due


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated database of this test's alone (a claim leases every due conversation it finds)."""
    if request.param == "sqlite":
        with migrated_engine(f"sqlite:///{tmp_path / 'claims.db'}") as eng:
            yield eng
        return
    server = request.getfixturevalue("postgres_database")
    with own_postgres_database(server, "openbloo_claims") as url, migrated_engine(url) as eng:
        yield eng


def _accept(engine: Engine, sends: list[tuple[str, str]]) -> list[str]:
    """Accepts ``(to, text)`` sends one after another (one acceptance order); their message ids."""
    ctx = org_context(engine, "claims", "+15550008888")
    ids = []
    for to, text in sends:
        [(ok, outcome)] = run_units(engine, [planned_send(ctx, to, text)])
        assert ok, outcome
        ids.append(json.loads(outcome.body)["message_id"])
    return ids


def _claim(engine: Engine, limit: int = 256, now: int = NOW) -> list[ClaimedConversation]:
    [(ok, claimed)] = run_units(engine, [claim(WORKER, now, 60_000, limit)])
    assert ok, claimed
    return list(claimed)


def _ids(conv: ClaimedConversation) -> list[str]:
    return [job.outgoing.message_id for job in conv.jobs]


def test_each_conversation_gets_its_jobs_in_acceptance_order(engine: Engine) -> None:
    to = ["+15550610001", "+15550610002", "+15550610003"]
    ids = _accept(engine, [(t, f"{t} #{n}") for n in range(3) for t in to])
    claimed = _claim(engine)
    assert sorted(_ids(c) for c in claimed) == sorted([ids[i::3] for i in range(3)])
    assert all(c.head_started and not c.truncated for c in claimed)
    assert _claim(engine) == []  # all three are leased now


def test_a_conversation_whose_next_job_waits_for_its_retry_is_left_alone(engine: Engine) -> None:
    ids = _accept(engine, [("+15550620001", "first"), ("+15550620002", "other"), ("+15550620001", "second")])
    with engine.begin() as conn:  # the first job waits for a retry; the conversation's lease ran out meanwhile
        conn.execute(update(m.messages).where(m.messages.c.id == ids[0]).values(job_next_attempt_at=NOW + 30_000))
    claimed = _claim(engine)
    assert [_ids(c) for c in claimed] == [[ids[1]]]  # not "second" before "first"
    later = _claim(engine, now=NOW + 30_001)  # "other" is still leased (60 s)
    assert [_ids(c) for c in later] == [[ids[0], ids[2]]]


def test_a_full_window_marks_its_conversations_to_be_claimed_again(engine: Engine) -> None:
    # limit 1: a window of 4 jobs, all of one conversation's 6.
    ids = _accept(engine, [("+15550630001", f"#{n}") for n in range(6)] + [("+15550630002", "other")])
    [first] = _claim(engine, limit=1)
    assert _ids(first) == ids[:4] and first.truncated
    for job in first.jobs:  # sent, one after another, as the dispatcher does; then the conversation is released
        run_units(engine, [jobs.then_next(lambda _b: None, job, None, WORKER, NOW, 60_000)])
        with engine.begin() as conn:
            conn.execute(update(m.messages).where(m.messages.c.seq == job.seq).values(job_state="done"))
    again = _claim(engine, limit=2)
    assert sorted(_ids(c) for c in again) == sorted([ids[4:6], [ids[6]]])
    assert not any(c.truncated for c in again)


def test_a_job_left_in_flight_is_handed_over_as_it_was_and_started_again(engine: Engine) -> None:
    # A worker died mid-send: its attempt's marker is still on the job, and its conversation's lease ran out.
    # The claim hands the job over as it was before this claim started it (so the dispatcher asks the device
    # about it first), and starts it again in the same claim.
    [sent, later] = _accept(engine, [("+15550640001", "in flight"), ("+15550640001", "after it")])
    with engine.begin() as conn:
        conn.execute(
            update(m.messages)
            .where(m.messages.c.id == sent)
            .values(job_lease_owner="dead-worker", job_attempts=1, job_updated_at=123)
        )
    [conv] = _claim(engine)
    head, following = conv.jobs
    assert conv.head_started and _ids(conv) == [sent, later]
    assert head.in_flight and head.outgoing.in_flight_since == 123 and head.outgoing.attempt == 2
    assert not following.in_flight and following.outgoing.attempt == 1
    with engine.connect() as conn:
        row = conn.execute(
            select(m.messages.c.job_lease_owner, m.messages.c.job_attempts, m.messages.c.job_updated_at).where(
                m.messages.c.id == sent
            )
        ).one()
    assert tuple(row) == (WORKER, 2, 123)  # started again; the first attempt's time is kept


def test_a_claim_in_progress_does_not_hold_up_a_send_to_its_conversation(postgres_database: str) -> None:
    """A message's row refers to its conversation, so storing one takes a key-share lock on that row. The claim
    locks the conversations it leases for no key update: a send to a conversation being claimed is stored at
    once, not after the claim's COMMIT (a FOR UPDATE lock made it wait for it)."""
    with own_postgres_database(postgres_database, "openbloo_claim_locks") as url, migrated_engine(url) as engine:
        # The other API process gives up on a lock after a second instead of waiting for the claim.
        impatient = make_sync_engine(database_urls(f"{url}?options=-c%20lock_timeout%3D1000"))
        try:
            ctx = org_context(engine, "claims", "+15550008888")
            [(ok, accepted)] = run_units(engine, [planned_send(ctx, "+15550660001", "first")])
            assert ok, accepted
            first = json.loads(accepted.body)["message_id"]
            with engine.connect() as claiming, claiming.begin():  # the claim, not committed yet
                [conv] = claim(WORKER, NOW, 60_000, 256)(Batch(claiming))
                assert _ids(conv) == [first]
                [(ok, outcome)] = run_units(impatient, [planned_send(ctx, "+15550660001", "second")], again=False)
                assert ok and outcome.status == 202, outcome
        finally:
            impatient.dispose()


def test_a_claim_on_postgresql_waits_for_the_server_twice(postgres_database: str, tmp_path: Path) -> None:
    """Through the writer's held connection a PostgreSQL claim is one statement (find, lock and lease the due
    conversations, start the first job of each, read their jobs) sent with the transaction's BEGIN, then the
    COMMIT: it was four round trips (lease, jobs, start, COMMIT), on the path from acceptance to the device."""
    with own_postgres_database(postgres_database, "openbloo_claim_trips") as url, migrated_engine(url) as engine:
        held = HeldConnection(engine)
        try:
            ids = _accept(engine, [("+15550650001", "one"), ("+15550650002", "two"), ("+15550650001", "three")])
            engine.dispose()  # the next connection is traced from its start
            with libpq_trace(engine, tmp_path / "libpq.trace") as client_sent:
                [(ok, claimed)] = run_units(held, [claim(WORKER, NOW, 60_000, 256)])
                sent = client_sent()
                held.close()
            assert ok, claimed
            assert sorted(_ids(c) for c in claimed) == sorted([[ids[0], ids[2]], [ids[1]]])
            assert all(c.head_started for c in claimed)
            shown = "\n".join("\t".join(f[3:])[:90] for f in sent)
            waits = [f for f in sent if f[3].startswith(("Sync", "Query"))]
            assert len(waits) == 2, shown
            statements = [f[4] for f in sent if f[3].startswith("Parse")]
            assert len(statements) == 2 and '"WITH job_window' in statements[1], shown  # BEGIN and the claim
            assert waits[-1][3:] == ["Query", ' "COMMIT"'], shown
        finally:
            held.close()
