"""A batch of sends reads its idempotency records, chats, conversations and contacts once per table, and the
sends behave exactly as if each had looked its rows up alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from openbloo.config import database_urls
from openbloo.db import models as m
from openbloo.db.engine import make_sync_engine
from openbloo.db.migrate import upgrade
from openbloo.db.writer import HeldConnection, run_unit, run_units
from tests.helpers import libpq_trace, org_context, planned_send


@pytest.fixture
def traced_engine(tmp_path: Path) -> Iterator[tuple[Engine, list[str]]]:
    urls = database_urls(f"sqlite:///{tmp_path / 'lookups.db'}")
    upgrade(urls)
    engine = make_sync_engine(urls)
    statements: list[str] = []
    # At the driver: the writer's hot statements run on the raw cursor, past SQLAlchemy's events.
    event.listen(engine, "connect", lambda dbapi, _rec: dbapi.set_trace_callback(statements.append))
    yield engine, statements
    engine.dispose()


def test_a_batch_of_sends_looks_rows_up_per_table_not_per_send(traced_engine: tuple[Engine, list[str]]) -> None:
    engine, statements = traced_engine
    ctx = org_context(engine, "lookups", "+15550009999")
    known = [f"+1555010{i:04d}" for i in range(10)]
    first = run_units(engine, [planned_send(ctx, to, "first", f"k-{to}") for to in known])
    assert [o.status for ok, o in first if ok] == [202] * 10

    new = [f"+1555020{i:04d}" for i in range(10)]

    def refused_after_planning(batch: Any) -> Any:
        planned_send(ctx, "+15550309999", "never stored")(batch)  # plans a new chat, then fails
        raise RuntimeError("refused after planning")

    units = (
        [planned_send(ctx, to, "first", f"k-{to}") for to in known]  # replays of the first batch
        + [planned_send(ctx, to, "second") for to in known]  # known chats and conversations, no key
        + [planned_send(ctx, to, "new", f"n-{to}") for to in new]  # new chats and contacts
        + [planned_send(ctx, new[0], "same batch")]  # a chat created earlier in this very batch
        + [refused_after_planning]
    )
    statements.clear()
    outcomes = run_units(engine, units, again=False)
    assert all(ok for ok, _ in outcomes[:-1]), outcomes
    assert [o.status for _, o in outcomes[:-1]] == [200] * 10 + [202] * 21
    assert not outcomes[-1][0]
    assert [o.body for _, o in outcomes[:10]] == [o.body for _, o in first]

    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # Idempotency records, chats, conversations, contacts, the number's opt-out probe and day counters, the
    # webhook subscriptions: a handful for 31 sends, where one unit alone makes four lookups of its own.
    assert len(selects) <= 10, "\n".join(s[:90].replace("\n", " ") for s in selects)

    with engine.connect() as conn:
        chats = dict(conn.execute(select(m.chats.c.chat_key, m.chats.c.message_count)).all())
        assert all(chats[to] == 2 for to in known)
        assert chats[new[0]] == 2 and all(chats[to] == 1 for to in new[1:])
        assert conn.execute(select(func.count()).select_from(m.contacts)).scalar_one() == 20
        assert conn.execute(select(func.count()).select_from(m.conversations)).scalar_one() == 20
        assert conn.execute(select(func.count()).select_from(m.idempotency_keys)).scalar_one() == 20
        assert conn.execute(select(func.count()).select_from(m.messages)).scalar_one() == 31
        # The organization counts the chats its sends made (GET /chats's total), none of the failed unit's.
        assert "+15550309999" not in chats and len(chats) == 20
        counted = select(m.organizations.c.chat_count).where(m.organizations.c.id == ctx.organization_id)
        assert conn.execute(counted).scalar_one() == 20


@pytest.mark.parametrize("through", ["engine", "writer"])
def test_a_send_racing_another_process_to_a_new_recipient_is_run_again_not_failed(
    postgres_database: str, through: str
) -> None:
    """Two API processes send to the same new recipient at once: the one that commits second finds the contact,
    chat and conversation the other created when its flush hits their unique keys. Its batch, even of a
    single send, runs once more and answers 202 (it answered 500 before). ``writer``: through the writer's
    held connection, whose batch opens and commits its transaction itself (db.deferred_begin)."""
    urls = database_urls(postgres_database)
    upgrade(urls)
    engine, other = make_sync_engine(urls), make_sync_engine(urls)
    try:
        org, number = ("lookups", "+15550009999") if through == "engine" else ("racing", "+15550008877")
        ctx = org_context(engine, org, number)
        to = "+15550307777"
        runs: list[int] = []
        send = planned_send(ctx, to, "mine", "race-mine")

        def racing(batch: Any) -> Any:
            runs.append(1)
            result = send(batch)  # looked up: no contact, chat or conversation yet; the inserts wait for the flush
            if len(runs) == 1:  # meanwhile the other process commits its send to the same recipient
                assert run_unit(other, planned_send(ctx, to, "theirs", "race-theirs")).status == 202
            return result

        [(ok, outcome)] = run_units(engine if through == "engine" else HeldConnection(engine), [racing])
        assert ok, outcome
        assert outcome.status == 202 and len(runs) == 2
        with engine.connect() as conn:
            chats = conn.execute(
                select(m.chats.c.chat_key, m.chats.c.message_count).where(
                    m.chats.c.organization_id == ctx.organization_id
                )
            ).all()
            assert [tuple(c) for c in chats if c[0] == to] == [(to, 2)]
            contacts = select(func.count()).where(m.contacts.c.organization_id == ctx.organization_id)
            assert conn.execute(contacts).scalar_one() == 1
            # Counted once: the batch that lost the race counted nothing when it ran again.
            org = select(m.organizations.c.chat_count).where(m.organizations.c.id == ctx.organization_id)
            assert conn.execute(org).scalar_one() == 1
    finally:
        engine.dispose()
        other.dispose()


def test_on_postgresql_a_batch_reads_its_lookups_in_one_round_trip(postgres_database: str, tmp_path: Path) -> None:
    """Every lookup of a batch of sends (idempotency records, chats, conversations, contacts, the webhook
    subscriptions, the numbers' opt-outs) goes out in one pipeline: the client waits for the server (a libpq
    Sync) once for them all, and once each for the transaction's start, the writes and the commit."""
    urls = database_urls(postgres_database)
    upgrade(urls)
    engine = make_sync_engine(urls)
    try:
        ctx = org_context(engine, "pipelined", "+15550008888")  # the database is the session's: an org of its own
        known = [f"+1555040{i:04d}" for i in range(5)]
        assert all(ok for ok, _ in run_units(engine, [planned_send(ctx, to, "first", f"k-{to}") for to in known]))
        engine.dispose()  # the next connection is traced from its start
        units = (
            [planned_send(ctx, to, "first", f"k-{to}") for to in known]  # replays
            + [planned_send(ctx, to, "second") for to in known]  # known chats and conversations
            + [planned_send(ctx, f"+1555050{i:04d}", "new", f"n-{i}") for i in range(5)]  # new chats and contacts
        )
        with libpq_trace(engine, tmp_path / "libpq.trace") as client_sent:
            outcomes = run_units(engine, units, again=False)
            sent = client_sent()
        assert [o.status for _, o in outcomes] == [200] * 5 + [202] * 10
        waits = [i for i, fields in enumerate(sent) if fields[3].startswith("Sync")]
        selects = [i for i, fields in enumerate(sent) if fields[3].startswith("Parse") and '"SELECT' in fields[4]]
        commits = [i for i, fields in enumerate(sent) if "COMMIT" in fields[-1]]
        # idempotency records, chats with their conversations, contacts, subscriptions, opt-outs
        assert len(selects) >= 5, sent
        # BEGIN; the lookups; the writes; then COMMIT (a simple query): nothing else waits for the server.
        assert len(waits) == 3 and len(commits) == 1, "\n".join("\t".join(f[3:])[:100] for f in sent)
        assert waits[0] < selects[0] and selects[-1] < waits[1], "every SELECT went out before the lookups' wait"
    finally:
        engine.dispose()


def test_the_writers_batch_on_postgresql_is_two_round_trips(postgres_database: str, tmp_path: Path) -> None:
    """Through the writer's held connection a batch of sends waits for the server twice: BEGIN goes out with
    the lookups, COMMIT with the writes (the driver's own BEGIN and COMMIT each waited a round trip)."""
    urls = database_urls(postgres_database)
    upgrade(urls)
    engine = make_sync_engine(urls)
    held = HeldConnection(engine)
    try:
        ctx = org_context(engine, "two-trips", "+15550008866")
        known = [f"+1555070{i:04d}" for i in range(3)]
        assert all(ok for ok, _ in run_units(engine, [planned_send(ctx, to, "first") for to in known]))
        engine.dispose()
        units = [planned_send(ctx, to, "again") for to in known] + [planned_send(ctx, "+15550800001", "new", "k-new")]
        with libpq_trace(engine, tmp_path / "libpq.trace") as client_sent:
            assert [o.status for _, o in run_units(held, units)] == [202] * 4
            sent = client_sent()
            held.close()
        shown = "\n".join("\t".join(f[3:])[:90] for f in sent)
        waits = [i for i, f in enumerate(sent) if f[3].startswith(("Sync", "Query"))]
        assert len(waits) == 2, shown
        statements = [(i, f[4]) for i, f in enumerate(sent) if f[3].startswith("Parse")]
        assert statements[0][1].startswith(' "" "BEGIN"') and statements[-1][1].startswith(' "" "COMMIT"'), shown
        selects = [i for i, text in statements if '"SELECT' in text]
        writes = [i for i, text in statements if '"INSERT' in text or '"UPDATE' in text]
        assert max(selects) < waits[0] < min(writes) and max(writes) < waits[1], shown
        with engine.connect() as conn:  # committed: read from another connection
            mine = select(func.count()).where(m.messages.c.organization_id == ctx.organization_id)
            assert conn.execute(mine).scalar_one() == 7
    finally:
        held.close()
        engine.dispose()
