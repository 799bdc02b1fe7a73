"""Alembic environment: one set of migrations for SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import context

from openbloo.config import database_urls
from openbloo.db.engine import make_sync_engine
from openbloo.db.models import metadata

config = context.config
urls = config.attributes.get("database_urls") or database_urls(config.get_main_option("sqlalchemy.url") or "")


def run_migrations() -> None:
    engine = make_sync_engine(urls)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            # SQLite cannot ALTER most things in place; batch mode rebuilds tables where needed.
            render_as_batch=urls.is_sqlite,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
