"""The Alembic migrations: up to head, down to base and up again on fresh SQLite and PostgreSQL databases, and
the migrated schema equals the models (``openbloo.db.models.metadata``) as Alembic's autogenerate sees it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from openbloo.auth.keys import create_key
from openbloo.config import DatabaseUrls, database_urls
from openbloo.db.engine import make_sync_engine
from openbloo.db.migrate import alembic_config, downgrade, upgrade
from openbloo.db.models import metadata
from openbloo.db.writer import run_unit
from tests.conftest import _pg_admin_url

MODEL_TABLES = set(metadata.tables)


HEAD = "0011"  # the newest revision


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseUrls]:
    """A brand-new, empty database of each kind (PostgreSQL: a sibling of the session's test database)."""
    if request.param == "sqlite":
        yield database_urls(f"sqlite:///{tmp_path / 'migrations.db'}")
        return
    session_db: str = request.getfixturevalue("postgres_database")  # skips (or fails in CI) like the others
    import psycopg

    name = f"openbloo_migr_{secrets.token_hex(4)}"
    admin = _pg_admin_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_urls(f"{session_db.rsplit('/', 1)[0]}/{name}")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _inspect(urls: DatabaseUrls) -> tuple[set[str], list[str]]:
    """(tables, alembic revisions recorded) of the database."""
    engine = make_sync_engine(urls)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            versions: list[str] = []
            if "alembic_version" in tables:
                versions = [r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))]
        return tables - {"alembic_version"}, versions
    finally:
        engine.dispose()


def _diff(urls: DatabaseUrls) -> list[Any]:
    engine = make_sync_engine(urls)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_single_head_with_downgrades() -> None:
    scripts = ScriptDirectory.from_config(alembic_config(database_urls("sqlite:///unused.db")))
    assert scripts.get_heads() == [HEAD]
    for revision in scripts.walk_revisions():
        assert callable(getattr(revision.module, "downgrade", None)), revision.revision


def test_upgrade_downgrade_upgrade(fresh_urls: DatabaseUrls) -> None:
    assert _inspect(fresh_urls) == (set(), [])

    upgrade(fresh_urls)
    assert _inspect(fresh_urls) == (MODEL_TABLES, [HEAD])
    upgrade(fresh_urls)  # already at head: a no-op
    assert _inspect(fresh_urls) == (MODEL_TABLES, [HEAD])

    downgrade(fresh_urls, "base")
    assert _inspect(fresh_urls) == (set(), [])

    upgrade(fresh_urls)
    assert _inspect(fresh_urls) == (MODEL_TABLES, [HEAD])
    # The re-created schema is usable: a key (and its organization) can be written.
    engine = make_sync_engine(fresh_urls)
    try:
        key = run_unit(engine, create_key("after-roundtrip", "k"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT name FROM organizations")).scalar_one() == "after-roundtrip"
            assert conn.execute(sa.text("SELECT prefix FROM api_keys")).scalar_one() == key.prefix
    finally:
        engine.dispose()


def test_migrated_schema_matches_models(fresh_urls: DatabaseUrls) -> None:
    upgrade(fresh_urls)
    assert _diff(fresh_urls) == [], "the migrations and openbloo.db.models differ (regenerate or add a migration)"


def test_comparison_detects_drift(fresh_urls: DatabaseUrls) -> None:
    """Guards the test above against comparing nothing: a column the models lack is reported."""
    upgrade(fresh_urls)
    engine = make_sync_engine(fresh_urls)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE organizations ADD COLUMN drift INTEGER"))
    finally:
        engine.dispose()
    removed = [d for d in _diff(fresh_urls) if d[0] == "remove_column"]
    assert [(d[2], d[3].name) for d in removed] == [("organizations", "drift")]


def test_0002_gives_numbers_added_before_it_a_callback_token(fresh_urls: DatabaseUrls) -> None:
    upgrade(fresh_urls, "0001")
    engine = make_sync_engine(fresh_urls)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO organizations (id, name, created_at) VALUES ('org_1', 'old', 1)"))
            for i in (1, 2):
                conn.execute(
                    sa.text(
                        "INSERT INTO numbers (id, organization_id, phone_number, transport, is_active, inbound_count,"
                        " outbound_count, day_outbound, day_new_conversations, created_at)"
                        f" VALUES ('alloc_{i}', 'org_1', '+1555555010{i}', 'simulator', true, 0, 0, 0, 0, 1)"
                    )
                )
        upgrade(fresh_urls)
        with engine.connect() as conn:
            tokens = [r[0] for r in conn.execute(sa.text("SELECT inbound_token FROM numbers"))]
        assert len(tokens) == 2 and all(t and len(t) >= 32 for t in tokens) and tokens[0] != tokens[1]
        downgrade(fresh_urls, "0001")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM numbers")).scalar_one() == 2
    finally:
        engine.dispose()


def test_0010_moves_each_delivery_job_into_its_message_and_back(fresh_urls: DatabaseUrls) -> None:
    upgrade(fresh_urls, "0009")
    engine = make_sync_engine(fresh_urls)
    rows = [  # message id, job: state, attempts, next attempt, in-flight owner, updated at, last error
        ("msg_sent", "done", 1, 10, None, 20, None),
        ("msg_retry", "pending", 2, 500, "worker-a", 30, "timeout"),
        ("msg_new", "pending", 0, 40, None, 40, None),
    ]
    try:
        with engine.begin() as conn:
            run = conn.execute
            run(sa.text("INSERT INTO organizations (id, name, created_at) VALUES ('org_1', 'old', 1)"))
            run(
                sa.text(
                    "INSERT INTO numbers (id, organization_id, phone_number, transport, is_active, inbound_count,"
                    " outbound_count, day_outbound, day_new_conversations, created_at, inbound_token)"
                    " VALUES ('num_1', 'org_1', '+15555550101', 'simulator', true, 0, 0, 0, 0, 1, 'tok')"
                )
            )
            run(
                sa.text(
                    "INSERT INTO chats (id, organization_id, chat_key, type, message_count, inbound_count,"
                    " outbound_count, created_at) VALUES ('chat_1', 'org_1', '+15555550199', 'direct', 3, 0, 3, 1)"
                )
            )
            run(
                sa.text(
                    "INSERT INTO conversations (id, organization_id, chat_id, number_id, inbound_count, created_at)"
                    " VALUES ('conv_1', 'org_1', 'chat_1', 'num_1', 0, 1)"
                )
            )
            for mid, state, attempts, due, owner, updated, error in [*rows, ("msg_in", None, 0, 0, None, 0, None)]:
                run(
                    sa.text(
                        "INSERT INTO messages (id, organization_id, chat_id, conversation_id, number_id, direction,"
                        " status, protocol, time_sent, created_at)"
                        " VALUES (:id, 'org_1', 'chat_1', 'conv_1', 'num_1', :dir, 'queued', 'pending', 1, 1)"
                    ),
                    {"id": mid, "dir": "inbound" if state is None else "outbound"},
                )
                if state is not None:
                    run(
                        sa.text(
                            "INSERT INTO delivery_jobs (message_id, organization_id, conversation_id, number_id,"
                            " state, attempts, next_attempt_at, lease_owner, transport_ref, last_error, created_at,"
                            " updated_at) VALUES (:id, 'org_1', 'conv_1', 'num_1', :state, :attempts, :due, :owner,"
                            " :id, :error, 1, :updated)"
                        ),
                        {
                            "id": mid,
                            "state": state,
                            "attempts": attempts,
                            "due": due,
                            "owner": owner,
                            "error": error,
                            "updated": updated,
                        },
                    )
        upgrade(fresh_urls)
        with engine.connect() as conn:
            moved = conn.execute(
                sa.text(
                    "SELECT id, job_state, job_attempts, job_next_attempt_at, job_lease_owner, job_updated_at,"
                    " job_last_error FROM messages ORDER BY seq"
                )
            ).all()
        assert [tuple(r) for r in moved] == [*rows, ("msg_in", None, None, None, None, None, None)]
        downgrade(fresh_urls, "0009")
        with engine.connect() as conn:
            back = conn.execute(
                sa.text(
                    "SELECT message_id, state, attempts, next_attempt_at, lease_owner, updated_at, last_error"
                    " FROM delivery_jobs ORDER BY seq"
                )
            ).all()
            refs = conn.execute(sa.text("SELECT count(*) FROM delivery_jobs WHERE transport_ref = message_id"))
            assert refs.scalar_one() == 3
        assert [tuple(r) for r in back] == rows
    finally:
        engine.dispose()


def test_0011_gives_each_chat_its_newest_message_time(fresh_urls: DatabaseUrls) -> None:
    upgrade(fresh_urls, "0010")
    engine = make_sync_engine(fresh_urls)
    try:
        with engine.begin() as conn:
            run = conn.execute
            run(sa.text("INSERT INTO organizations (id, name, created_at) VALUES ('org_1', 'old', 1)"))
            for chat in ("chat_busy", "chat_empty"):
                run(
                    sa.text(
                        "INSERT INTO chats (id, organization_id, chat_key, type, message_count, inbound_count,"
                        " outbound_count, created_at) VALUES (:id, 'org_1', :id, 'phone', 0, 0, 0, 1)"
                    ),
                    {"id": chat},
                )
            for i, t in enumerate((5, 9, 7)):  # stored out of time order: the newest is not the last stored
                run(
                    sa.text(
                        "INSERT INTO messages (id, organization_id, chat_id, direction, status, protocol, time_sent,"
                        " created_at) VALUES (:id, 'org_1', 'chat_busy', 'inbound', 'received', 'sms', :t, :t)"
                    ),
                    {"id": f"msg_{i}", "t": t},
                )
        upgrade(fresh_urls)
        with engine.connect() as conn:
            chats = conn.execute(sa.text("SELECT id, newest_message_time, time_order_breaks FROM chats ORDER BY id"))
            assert [tuple(r) for r in chats] == [("chat_busy", 9, 0), ("chat_empty", None, 0)]
        downgrade(fresh_urls, "0010")
        assert "newest_message_time" not in {c["name"] for c in sa.inspect(engine).get_columns("chats")}
    finally:
        engine.dispose()
