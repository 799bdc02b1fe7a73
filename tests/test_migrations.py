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


HEAD = "0009"  # the newest revision


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
