"""Events are stored for the webhooks that receive them, and only for them (events/store.py): an event row is
read only through its deliveries, so an event that no webhook receives is neither written nor built."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from openbloo.db import models as m
from openbloo.messages import outbox
from tests.conftest import Server, Tenant, make_tenant, unique_number
from tests.helpers import events_of, inbound, path_id, send, subscribe, wait_for, wait_status
from tests.receiver import Receiver


def _stored(server: Server, org_id: str, table: Any) -> int:
    with server.runtime.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(table.c.organization_id == org_id)).scalar_one())


def test_without_a_webhook_a_message_is_delivered_and_stores_no_event(tenant: Tenant) -> None:
    to = unique_number()
    sent = send(tenant, to, text=["one", "two"])
    for mid in sent["message_ids"]:
        wait_status(tenant, to, mid, "delivered")
    received = inbound(tenant, unique_number(), "hello")
    assert events_of(tenant.server, received) == []
    assert _stored(tenant.server, tenant.organization_id, m.events) == 0
    assert _stored(tenant.server, tenant.organization_id, m.webhook_deliveries) == 0


def test_a_message_webhook_stores_inbound_events_and_no_status_events(tenant: Tenant, receiver: Receiver) -> None:
    subscribe(tenant, receiver.url, "message")
    to = unique_number()
    sent = send(tenant, to, text="out")["message_id"]
    wait_status(tenant, to, sent, "delivered")
    received = inbound(tenant, unique_number(), "in")
    assert events_of(tenant.server, sent) == []
    assert events_of(tenant.server, received) == ["message.received"]
    wait_for(lambda: receiver.event_types(received) == ["message.received"], what="message.received")
    assert _stored(tenant.server, tenant.organization_id, m.events) == 1


def test_a_status_webhook_stores_each_status_event_once_with_its_delivery(tenant: Tenant, receiver: Receiver) -> None:
    subscribe(tenant, receiver.url, "status")
    to = "+15552001234"  # the simulator delivers, then reads
    sent = send(tenant, to, text="watched")["message_id"]
    wait_for(lambda: "message.read" in receiver.event_types(sent), what="message.read")
    stored = events_of(tenant.server, sent)
    assert stored == ["message.queued", "message.sent", "message.delivered", "message.read"]
    assert sorted(receiver.event_types(sent)) == sorted(stored)
    assert _stored(tenant.server, tenant.organization_id, m.webhook_deliveries) == len(stored)


def test_an_api_key_webhook_stores_the_events_of_its_own_key_only(server: Server, receiver: Receiver) -> None:
    t = make_tenant(server)
    other_key = t.add_key("second")
    subscribe(t, receiver.url, "status")  # scope api_key: the first key's messages
    to = unique_number()
    mine = send(t, to, text="first key")["message_id"]
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {other_key.api_key}"}) as http:
        r = http.post(f"/chats/{path_id(to)}/messages", json={"text": "second key"})
    assert r.status_code == 202, r.text
    theirs = r.json()["message_id"]
    wait_status(t, to, theirs, "delivered")
    wait_for(lambda: "message.delivered" in receiver.event_types(mine), what="the first key's delivery")
    assert events_of(server, theirs) == []
    assert events_of(server, mine)[:3] == ["message.queued", "message.sent", "message.delivered"]


def test_a_webhook_made_later_gets_the_events_from_then_on(tenant: Tenant, receiver: Receiver) -> None:
    to = unique_number()
    before = send(tenant, to, text="before")["message_id"]
    wait_status(tenant, to, before, "delivered")
    subscribe(tenant, receiver.url, "status")
    after = send(tenant, to, text="after")["message_id"]
    wait_for(lambda: "message.delivered" in receiver.event_types(after), what="the later message's delivery")
    time.sleep(0.2)
    assert receiver.event_types(before) == [] and events_of(tenant.server, before) == []


def test_an_event_nobody_receives_is_not_even_built(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = outbox.message_payload

    def counting(event: str, **fields: Any) -> dict[str, Any]:
        built.append(event)
        return real(event, **fields)

    monkeypatch.setattr(outbox, "message_payload", counting)
    to = unique_number()
    send(tenant, to, text="unwatched")
    assert built == []
    with tenant.http() as http:
        r = http.post("/webhooks", json={"webhook_url": "http://127.0.0.1:9/hook", "webhook_type": "status"})
    assert r.status_code == 201, r.text
    send(tenant, to, text="watched")
    assert built == ["message.queued"]
