"""Run the Alembic migrations programmatically (``openbloo migrate`` and start-up of ``serve``/``worker``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from openbloo.config import DatabaseUrls

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(urls: DatabaseUrls) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", urls.sync.replace("%", "%%"))
    cfg.attributes["database_urls"] = urls
    return cfg


def upgrade(urls: DatabaseUrls, revision: str = "head") -> None:
    command.upgrade(alembic_config(urls), revision)


def downgrade(urls: DatabaseUrls, revision: str) -> None:
    command.downgrade(alembic_config(urls), revision)
