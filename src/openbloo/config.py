"""Settings, from ``OPENBLOO_*`` environment variables (pydantic-settings).

``OPENBLOO_DATABASE_URL`` takes plain URLs (``sqlite:///PATH``, ``postgresql://USER@HOST:PORT/DB``); openbloo
chooses the drivers itself (:func:`database_urls`), so the ``+aiosqlite`` / ``+asyncpg`` / ``+psycopg`` forms
people paste from other projects work too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_FILE = "openbloo.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENBLOO_", extra="ignore")

    database_url: str = f"sqlite:///{DEFAULT_DB_FILE}"
    host: str = "127.0.0.1"
    port: int = 8600
    # The base URL devices call back (BlueBubbles webhooks, Twilio callbacks); default http://HOST:PORT.
    public_url: str | None = None
    # How long a key → organization lookup is trusted in process memory; revocation takes effect within it.
    auth_cache_seconds: float = 3.0
    # Idempotency records are kept at least this long (DECISIONS.md §3).
    idempotency_ttl_hours: float = 24.0
    # SQLite durability: NORMAL survives a process kill (WAL); FULL also survives power loss.
    sqlite_synchronous: str = "NORMAL"
    # Delivery (the dispatcher): retries double from ``delivery_retry_base`` up to ``delivery_retry_max``
    # seconds; after ``delivery_max_attempts`` attempts a transiently failing message ends ``failed``.
    delivery_max_attempts: int = 10
    delivery_retry_base: float = 1.0
    delivery_retry_max: float = 30.0
    delivery_lease_seconds: float = 30.0
    delivery_send_timeout: float = 60.0
    dispatcher_poll_seconds: float = 0.25
    dispatcher_concurrency: int = 512
    # The simulator device: receipt schedule and where it keeps its own memory (default: beside the
    # SQLite database, or ./openbloo-simulator.db on PostgreSQL).
    simulator_delivery_ms: int = 300
    simulator_read_ms: int = 300
    simulator_state: str | None = None
    # Devices (BlueBubbles, Twilio): how often the workers look for numbers added or changed with the CLI,
    # check each device's health, and poll each BlueBubbles server for what its webhooks missed.
    registry_refresh_seconds: float = 5.0
    device_check_interval: float = 15.0
    reconcile_interval: float = 30.0
    # Hybrid numbers: how long BlueBubbles' answer to "is this handle on iMessage?" is trusted.
    imessage_cache_seconds: float = 3600.0
    # Webhooks: URL policy (DECISIONS.md §14), retry schedule (comma-separated seconds; its length is the
    # number of retries; default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), per-attempt timeout, and how
    # many attempts run at once per webhook and in all.
    webhook_allow_private: bool = False
    webhook_retry_schedule: str | None = None
    webhook_timeout_seconds: float = 15.0
    # 32 in flight: a receiver answering in 20 ms then takes 1,600 events/s; with 8 (the first default) the
    # sender fell seconds behind a status webhook at a few hundred sends/s (docs/benchmarks.md, e2e).
    webhook_concurrency_per_endpoint: int = 32
    webhook_concurrency: int = 256
    webhook_poll_seconds: float = 0.25
    # Finished attempts wait this long to be logged together (the receiver has its event already; only the
    # delivery's final state waits). None: 0.02 on PostgreSQL, where logged one by one a steady stream of
    # events cost a transaction or two per attempt, and 0 on SQLite, whose transactions cost no round trip
    # and where a bigger one holds the file's write lock longer (docs/benchmarks.md, twelfth round). A
    # stopping sender logs what waits before it stops.
    webhook_log_linger_seconds: float | None = None
    log_level: str = "info"


def public_base_url(settings: Settings) -> str:
    """Where devices reach this server: ``OPENBLOO_PUBLIC_URL``, else ``http://HOST:PORT`` of ``serve``."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return f"http://{settings.host}:{settings.port}"


def simulator_state_path(settings: Settings) -> Path:
    if settings.simulator_state:
        return Path(settings.simulator_state)
    urls = database_urls(settings.database_url)
    if urls.sqlite_path is not None:
        return urls.sqlite_path.with_name(urls.sqlite_path.stem + "-simulator.db")
    return Path("openbloo-simulator.db")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


@dataclass(frozen=True, slots=True)
class DatabaseUrls:
    """One database, spelled for each driver openbloo uses on it."""

    dialect: str  # "sqlite" | "postgresql"
    sync: str  # the writer thread, migrations and the CLI
    async_: str  # request-time reads
    sqlite_path: Path | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"


def database_urls(url: str) -> DatabaseUrls:
    """Map a user-facing database URL to the sync and async driver URLs openbloo runs on."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r} (expected sqlite:///PATH or postgresql://USER@HOST/DB)")
    base = scheme.split("+", 1)[0].lower()
    if base == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy spells them.
        path_part = rest[1:] if rest.startswith("/") else rest
        path_part = path_part.split("?", 1)[0]
        if path_part in ("", ":memory:"):
            raise ValueError("openbloo needs a SQLite file (workers and the API share it), not :memory:")
        path = Path(path_part)
        return DatabaseUrls("sqlite", f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}", sqlite_path=path)
    if base in ("postgresql", "postgres"):
        # psycopg 3 serves both the sync writer and async reads, so one driver covers PostgreSQL.
        return DatabaseUrls("postgresql", f"postgresql+psycopg://{rest}", f"postgresql+psycopg_async://{rest}")
    raise ValueError(f"unsupported database {scheme!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
