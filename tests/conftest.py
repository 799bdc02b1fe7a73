"""Shared fixtures: a real openbloo server per database (SQLite file and PostgreSQL), and fresh tenants.

Every test that uses ``server`` (or anything built on it) runs twice: once on SQLite, once on a fresh
PostgreSQL database created for the session on ``OPENBLOO_TEST_POSTGRES_URL`` (default: the local server,
trust auth). Without a reachable PostgreSQL the second half skips with a message saying so.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from openbloo.account.numbers import add_number
from openbloo.app import create_app
from openbloo.auth.keys import create_key
from openbloo.config import Settings
from openbloo.db.writer import run_unit
from openbloo.http_lane import uvicorn_options
from openbloo.runtime import Runtime

if TYPE_CHECKING:
    from tests.receiver import Receiver

PG_URL = os.environ.get("OPENBLOO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_admin_url() -> str:
    return PG_URL.split("+", 1)[0] if "+" in PG_URL.split("://", 1)[0] else PG_URL


def _pg_reachable() -> str | None:
    import psycopg

    try:
        with psycopg.connect(_pg_admin_url(), connect_timeout=3):
            return None
    except Exception as exc:  # any failure means "skip with a reason"
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session (dropped afterwards)."""
    if os.environ.get("OPENBLOO_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("PostgreSQL tests disabled by OPENBLOO_TEST_SKIP_POSTGRES=1")
    problem = _pg_reachable()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI but not reachable at {PG_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL} ({problem}); set OPENBLOO_TEST_POSTGRES_URL to run these")
    with own_postgres_database(_pg_admin_url(), "openbloo_test") as url:
        yield url


@contextlib.contextmanager
def own_postgres_database(server_url: str, prefix: str = "openbloo_own") -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url`` (a database URL), dropped afterwards."""
    import psycopg

    base, _ = server_url.rsplit("/", 1)
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own, on the session's kind (SQLite file or a new PostgreSQL database):
    for ``serve`` subprocesses, which bootstrap the ``default`` organization on an empty database."""
    if not database_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'own.db'}"
        return
    with own_postgres_database(database_url) as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'openbloo.db'}"
    return str(request.getfixturevalue("postgres_database"))


@dataclass
class Server:
    runtime: Runtime
    base_url: str  # http://127.0.0.1:PORT/v2/api
    root_url: str
    database_url: str

    @property
    def dialect(self) -> str:
        return self.runtime.urls.dialect


def server_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for test servers: short caches, fast retries and receipts, state kept beside the database."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "auth_cache_seconds": 0.5,
        "webhook_allow_private": True,
        "log_level": "warning",
        "delivery_retry_base": 0.05,
        "delivery_retry_max": 0.2,
        "dispatcher_poll_seconds": 0.05,
        "simulator_delivery_ms": 50,
        "simulator_read_ms": 50,
        "webhook_retry_schedule": "0.2,0.3,0.3,0.3",
        "webhook_poll_seconds": 0.05,
        "webhook_timeout_seconds": 3,
        # Devices: numbers added by a test are picked up, checked and reconciled within a fraction of a second.
        "registry_refresh_seconds": 0.2,
        "device_check_interval": 0.3,
        "reconcile_interval": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


class _ThreadedServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test process owns signals
        pass


@pytest.fixture(scope="session")
def simulator_state(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The simulator device's memory for this database (shared by every worker of the session)."""
    return str(tmp_path_factory.mktemp("sim") / "simulator.db")


@pytest.fixture(scope="session")
def server(database_url: str, simulator_state: str) -> Iterator[Server]:
    with running_server(database_url, simulator_state) as srv:
        yield srv


@contextlib.contextmanager
def running_server(database_url: str, simulator_state: str) -> Iterator[Server]:
    """An openbloo server (API and workers, as ``serve --single-process``) on a free loopback port, in a thread."""
    port = free_port()
    runtime = Runtime.create(
        server_settings(database_url, simulator_state=simulator_state, public_url=f"http://127.0.0.1:{port}")
    )
    config = uvicorn.Config(
        create_app(runtime), host="127.0.0.1", port=port, log_level="warning", lifespan="on", **uvicorn_options()
    )
    srv = _ThreadedServer(config)
    thread = threading.Thread(target=srv.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    root = f"http://127.0.0.1:{port}"
    try:
        yield Server(runtime, f"{root}/v2/api", root, database_url)
    finally:
        srv.should_exit = True
        thread.join(15)


@dataclass
class Tenant:
    """A fresh organization with one key and one active simulator number."""

    server: Server
    org: str
    api_key: str
    key_prefix: str
    organization_id: str
    number: str
    allocation_id: str

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", **extra}

    def sdk(self, **kwargs: Any) -> Any:
        import blooio

        return blooio.Blooio(base_url=self.server.base_url, api_key=self.api_key, max_retries=0, **kwargs)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, headers=self.headers(), timeout=30)

    def add_number(self, phone: str | None = None, **kwargs: Any) -> dict[str, Any]:
        return make_number(self.server, self.org, phone, **kwargs)

    def add_key(self, name: str | None = None) -> Any:
        return run_unit(self.server.runtime.engine, create_key(self.org, name))


_number_counter = iter(range(10_000_000))


def unique_number() -> str:
    """A fresh fictional sender number (+1 555 01x xxxx ...), unique within the test session."""
    n = next(_number_counter)
    return f"+1555{secrets.randbelow(9) + 1}{n:06d}"


def make_number(server: Server, org: str, phone: str | None = None, **kwargs: Any) -> dict[str, Any]:
    return run_unit(server.runtime.engine, add_number(phone or unique_number(), org_name=org, **kwargs))  # type: ignore[no-any-return]


def make_tenant(server: Server, **number_kwargs: Any) -> Tenant:
    org = f"org-{secrets.token_hex(5)}"
    key = run_unit(server.runtime.engine, create_key(org, "test"))
    number = make_number(server, org, **number_kwargs)
    return Tenant(
        server,
        org,
        key.api_key,
        key.prefix,
        key.organization_id,
        number["phone_number"],
        number["allocation_id"],
    )


@pytest.fixture
def tenant(server: Server) -> Tenant:
    return make_tenant(server)


@pytest.fixture
def other_tenant(server: Server) -> Tenant:
    return make_tenant(server)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback webhook receiver (tests.receiver) for the test, stopped after it."""
    from tests.receiver import Receiver  # here: tests.receiver imports this module

    r = Receiver().start()
    yield r
    r.stop()
