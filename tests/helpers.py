"""Small helpers shared by the tests: polling, reading stored rows, sends planned without the HTTP layer."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import select

from openbloo.account.numbers import add_number
from openbloo.addressing import parse_chat_id
from openbloo.auth.context import AuthContext, pool_number, pool_query
from openbloo.auth.keys import create_key
from openbloo.db import models as m
from openbloo.db.writer import run_unit
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


def events_of(server: Server, message_id: str) -> list[str]:
    with server.runtime.engine.connect() as conn:
        rows = conn.execute(select(m.events.c.type).where(m.events.c.message_id == message_id).order_by(m.events.c.seq))
        return [r.type for r in rows]


def send(tenant: Tenant, chat_id: str, **body: Any) -> dict[str, Any]:
    with tenant.http() as http:
        r = http.post(f"/chats/{path_id(chat_id)}/messages", json=body)
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def runtime_context(rt: Runtime, org: str = "wakeups", number: str = "+15550007777") -> AuthContext:
    """An organization with a key and a simulator number on ``rt``'s database, as the send route sees it."""
    key = run_unit(rt.engine, create_key(org, "k"))
    run_unit(rt.engine, add_number(number, org_name=org))
    with rt.engine.connect() as conn:
        pool = tuple(pool_number(r) for r in conn.execute(pool_query(key.organization_id, key.key_id)))
    return AuthContext(key.api_key, key.key_id, "k", {}, key.organization_id, org, None, 0, pool)


def planned_send(rt: Runtime, ctx: AuthContext, to: str, text: str) -> Any:
    """A send as the send route plans it (a unit for the writer): once committed, it wakes the dispatcher."""
    address = parse_chat_id(to, ctx.region)
    request = validate_send(decode_send_body(json.dumps({"text": text}).encode()), header_from_number=None)
    return plan_send(ctx, address, request, None, rt.notify_jobs)


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
