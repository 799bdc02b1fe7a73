"""Small helpers shared by the tests: polling, reading stored rows, sends planned without the HTTP layer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Engine, event, select
from sqlalchemy.dialects import postgresql, sqlite

from openbloo.account.numbers import add_number
from openbloo.addressing import parse_chat_id
from openbloo.auth.context import AuthContext, pool_number, pool_query
from openbloo.auth.keys import create_key
from openbloo.config import database_urls
from openbloo.db import models as m
from openbloo.db.engine import make_sync_engine
from openbloo.db.migrate import upgrade
from openbloo.db.writer import run_unit
from openbloo.messages.idempotency import Idempotency
from openbloo.messages.planner import plan_send
from openbloo.messages.rules import validate_send
from openbloo.messages.wire import decode_send_body
from openbloo.runtime import Runtime
from tests.conftest import Server, Tenant, server_settings

T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float = 15.0, interval: float = 0.05, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def path_id(chat_id: str) -> str:
    return quote(chat_id, safe="")


def message(tenant: Tenant, chat_id: str, message_id: str) -> dict[str, Any]:
    with tenant.http() as http:
        r = http.get(f"/chats/{path_id(chat_id)}/messages/{message_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_status(tenant: Tenant, chat_id: str, message_id: str, *statuses: str, timeout: float = 15.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        msg = message(tenant, chat_id, message_id)
        return msg if msg["status"] in statuses else None

    return wait_for(check, timeout, what=f"{message_id} to reach {statuses}")


def sqlite_plan(db: Path | sqlite3.Connection, stmt: Any, params: dict[str, Any]) -> str:
    """SQLite's query plan of the SQLAlchemy statement ``stmt`` with ``params`` bound, its steps joined by
    " / ", on the database file ``db`` or an open connection."""
    compiled = stmt.compile(dialect=sqlite.dialect())
    values = compiled.construct_params(params)
    bound = tuple(values[name] for name in compiled.positiontup)
    conn = sqlite3.connect(db) if isinstance(db, Path) else db
    try:
        return " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + str(compiled), bound))
    finally:
        if conn is not db:
            conn.close()


@contextlib.contextmanager
def libpq_trace(engine: Engine, path: Path) -> Iterator[Callable[[], list[list[str]]]]:
    """Trace the PostgreSQL protocol of every connection ``engine`` opens from here on (dispose its pool first,
    so that the next connection is new). Yields a function that returns the messages the client has sent so
    far, each split on tabs (libpq's trace: time, direction, length, message type, what follows)."""
    files: list[Any] = []
    traced: list[Any] = []

    def on_connect(dbapi: Any, _record: Any) -> None:
        files.append(path.open("w"))
        dbapi.pgconn.trace(files[-1].fileno())
        traced.append(dbapi.pgconn)

    def sent() -> list[list[str]]:
        for f in files:
            f.flush()
        return [line.split("\t") for line in path.read_text().splitlines() if "\tF\t" in line]

    event.listen(engine, "connect", on_connect)
    try:
        yield sent
    finally:
        event.remove(engine, "connect", on_connect)
        for pgconn in traced:  # before its file closes: libpq must not write to a closed (or reused) descriptor
            pgconn.untrace()
        for f in files:
            f.close()


def postgres_generic_plan(engine: Engine, stmt: Any, params: dict[str, Any]) -> str:
    """PostgreSQL's plan of the SQLAlchemy statement ``stmt`` as a prepared statement's generic plan (what a
    server that caches plans runs), with scans priced out: if a partial index's predicate were not implied,
    PostgreSQL could not use it and would scan anyway. Its steps joined by " / "."""
    compiled = stmt.compile(dialect=postgresql.dialect(paramstyle="numeric_dollar"))
    values = compiled.construct_params(params)
    args = ", ".join(f"'{values[name]}'" for name in compiled.positiontup)
    # SET LOCAL: the settings end with this transaction, not with the pooled connection.
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        conn.exec_driver_sql(f"PREPARE planned AS {compiled}")
        try:
            return " / ".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN EXECUTE planned({args})"))
        finally:
            conn.exec_driver_sql("DEALLOCATE planned")


def events_of(server: Server, message_id: str) -> list[str]:
    """The types of the events stored for a message, in order (only those some webhook receives)."""
    with server.runtime.engine.connect() as conn:
        rows = conn.execute(select(m.events.c.type).where(m.events.c.message_id == message_id).order_by(m.events.c.seq))
        return [r.type for r in rows]


def subscribe(t: Tenant, url: str, webhook_type: str = "all", **extra: Any) -> dict[str, Any]:
    """A webhook of ``t`` to ``url``. Events are stored only for the webhooks that receive them, so a test
    that reads a message's events (:func:`events_of`) subscribes first."""
    with t.http() as http:
        r = http.post("/webhooks", json={"webhook_url": url, "webhook_type": webhook_type, **extra})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def inbound(t: Tenant, sender: str, text: str) -> str:
    """A message from ``sender`` to ``t``'s number, through the simulator's inbound route; its message id."""
    with t.http() as http:
        r = http.post("/simulator/inbound", json={"from": sender, "text": text})
    assert r.status_code == 201, r.text
    return str(r.json()["message_id"])


def send(tenant: Tenant, chat_id: str, **body: Any) -> dict[str, Any]:
    with tenant.http() as http:
        r = http.post(f"/chats/{path_id(chat_id)}/messages", json=body)
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


@contextlib.contextmanager
def migrated_engine(url: str) -> Iterator[Engine]:
    """A sync engine on the database at ``url``, brought to the current schema; disposed afterwards."""
    urls = database_urls(url)
    upgrade(urls)
    eng = make_sync_engine(urls)
    try:
        yield eng
    finally:
        eng.dispose()


def org_context(engine: Engine, org: str = "wakeups", number: str = "+15550007777") -> AuthContext:
    """An organization with a key and a simulator number in ``engine``'s database, as the send route sees it."""
    key = run_unit(engine, create_key(org, "k"))
    run_unit(engine, add_number(number, org_name=org))
    with engine.connect() as conn:
        pool = tuple(pool_number(r) for r in conn.execute(pool_query(key.organization_id, key.key_id)))
    return AuthContext(key.api_key, key.key_id, "k", {}, key.organization_id, org, None, 0, pool)


IDEMPOTENCY_TTL_MS = 3_600_000


def planned_send(
    ctx: AuthContext, to: str, text: str, key: str | None = None, on_committed: Callable[[], None] | None = None
) -> Any:
    """A send as the send route plans it (a unit for the writer), with ``key`` as its ``Idempotency-Key``;
    ``on_committed``: what the route's commit wakes (the runtime's ``notify_jobs``)."""
    body = json.dumps({"text": text}).encode()
    address = parse_chat_id(to, ctx.region)
    request = validate_send(decode_send_body(body), header_from_number=None)
    return plan_send(ctx, address, request, Idempotency.of(key, address.key, body, IDEMPOTENCY_TTL_MS), on_committed)


async def wait_until(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``check`` on the event loop (the workers under test run there) until it is truthy; its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


@contextlib.asynccontextmanager
async def started_runtime(database_url: str, tmp_path: Path, **overrides: Any) -> AsyncIterator[Runtime]:
    """A started runtime of the test settings on ``database_url``, its simulator delivering and reading at once."""
    settings = server_settings(
        database_url,
        simulator_state=str(tmp_path / "simulator.db"),
        simulator_delivery_ms=0,
        simulator_read_ms=0,
        **overrides,
    )
    rt = Runtime.create(settings)
    rt.start()
    try:
        yield rt
    finally:
        await rt.close()
