"""Small helpers shared by the tests: polling, reading stored rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import select

from openbloo.db import models as m
from tests.conftest import Server, Tenant

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
