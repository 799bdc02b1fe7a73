"""No statement of a message's life reads a whole table that grows with the traffic.

A server on a fresh SQLite file runs what messages go through (1:1 sends, a text array, a new group and its
second message, an inbound message, the status and message webhooks' deliveries), with every statement its
connections run traced; each one is then planned on the file. A lookup that no index serves shows up as a
``SCAN`` of its table, and costs a read of every row of every organization: one, by a chat key without its
organization, once took a fifth of the worker's CPU in the bench's mix.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.conftest import Server, make_tenant, running_server, unique_number
from tests.helpers import inbound, send, subscribe, wait_for, wait_status
from tests.receiver import Receiver

# The tables whose rows grow with messages, chats and people; the others (organizations, keys, numbers,
# webhooks ...) hold a few rows an organization and are read whole on purpose.
GROWING = {
    "messages",
    "events",
    "webhook_deliveries",
    "webhook_attempts",
    "chats",
    "conversations",
    "contacts",
    "groups",
    "group_members",
    "idempotency_keys",
    "opt_outs",
}
_PLANNED = re.compile(r"^\s*(SELECT|UPDATE|DELETE|WITH|INSERT\s+INTO\s+\S+\s+SELECT)", re.IGNORECASE)


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[Server, list[str]]]:
    """A server on its own SQLite file whose connections' statements (parameters bound) are collected."""
    statements: list[str] = []
    lock = threading.Lock()

    def collect(sql: str) -> None:
        with lock:
            statements.append(sql)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):  # the writers' and workers' (sync) connections
            dbapi_connection.set_trace_callback(collect)

    event.listen(Engine, "connect", on_connect)
    try:
        with running_server(f"sqlite:///{tmp_path / 'plans.db'}", str(tmp_path / "simulator.db")) as server:
            with lock:
                statements.clear()  # the migrations' own, some of them of tables they drop later
            yield server, statements
    finally:
        event.remove(Engine, "connect", on_connect)


def _full_scans(db: Path, statements: list[str]) -> dict[str, str]:
    """Statement → the plan step that reads a growing table whole."""
    found: dict[str, str] = {}
    with sqlite3.connect(db) as conn:
        for sql in dict.fromkeys(statements):
            if not _PLANNED.match(sql):
                continue
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql):
                step = str(row[3])
                words = step.split()
                if words[:1] == ["SCAN"] and len(words) >= 2 and words[1] in GROWING and "USING" not in words:
                    found[sql[:300]] = step
    return found


def test_no_statement_of_a_messages_life_scans_a_growing_table(
    traced: tuple[Server, list[str]], receiver: Receiver
) -> None:
    server, statements = traced
    t = make_tenant(server)
    subscribe(t, receiver.url + "/status", "status")
    subscribe(t, receiver.url + "/message", "message")
    one, a, b = unique_number(), unique_number(), unique_number()
    sent = [send(t, one, text="hello")["message_id"], *send(t, one, text=["two", "bubbles"])["message_ids"]]
    group = send(t, f"{a},{b}", text="to a new group")
    again = send(t, group["group_id"], text="and again")
    received = inbound(t, unique_number(), "hi")
    for mid in sent:
        wait_status(t, one, mid, "delivered")
    for mid in (group["message_id"], again["message_id"]):
        wait_status(t, group["group_id"], mid, "delivered")
    wait_for(lambda: "message.delivered" in receiver.event_types(again["message_id"]), what="the group's webhook")
    wait_for(lambda: receiver.event_types(received) == ["message.received"], what="the inbound webhook")
    db = Path(server.database_url.removeprefix("sqlite:///"))
    traced_now = list(statements)
    assert any(s.startswith("UPDATE groups") for s in traced_now), "the group's device chat was not recorded"
    assert _full_scans(db, traced_now) == {}
