"""Hybrid numbers: iMessage through the fake Mac when the handle is on iMessage, SMS through the fake Twilio
when it is not (BlueBubbles says so, or Messages fails the send with error 22), through the official SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import blooio
import pytest
from sqlalchemy import select, update

from openbloo.db import models as m
from openbloo.db.writer import run_unit
from tests.bluebubbles_support import wait_device_info
from tests.conftest import Server, Tenant, make_tenant
from tests.fakes.bluebubbles import FakeBlueBubbles
from tests.fakes.twilio import FakeTwilio
from tests.helpers import events_of, message, subscribe, wait_for, wait_status
from tests.receiver import Receiver
from tests.twilio_support import sms_handle, twilio_config


@dataclass
class Hybrid:
    mac: FakeBlueBubbles
    twilio: FakeTwilio
    tenant: Tenant

    @property
    def server(self) -> Server:
        return self.tenant.server

    def number_row(self) -> Any:
        with self.server.runtime.engine.connect() as conn:
            return conn.execute(select(m.numbers).where(m.numbers.c.id == self.tenant.allocation_id)).one()

    def imessage_sends(self, text: str) -> list[Any]:
        return [c for c in self.mac.calls("/chat/new") + self.mac.calls("/message/text") if c.json["message"] == text]


@pytest.fixture
def hybrid(server: Server, receiver: Receiver) -> Iterator[Hybrid]:
    mac = FakeBlueBubbles().start()
    sms = FakeTwilio().start()
    config = {"bluebubbles": {"url": mac.url, "password": mac.password}, "twilio": twilio_config(sms)}
    tenant = make_tenant(server, transport="hybrid", transport_config=config)
    h = Hybrid(mac, sms, tenant)
    sms.inbound_urls[tenant.number] = f"{server.root_url}/callbacks/twilio/{h.number_row().inbound_token}/inbound"
    wait_for(lambda: mac.webhooks, timeout=10, what="the webhook registration")
    subscribe(tenant, receiver.url)  # the events these tests read are stored for a webhook
    try:
        yield h
    finally:

        def detach(batch: Any) -> None:
            batch.conn.execute(
                update(m.numbers).where(m.numbers.c.id == tenant.allocation_id).values(transport_config={})
            )

        run_unit(server.runtime.engine, detach)
        mac.stop()
        sms.stop()


def test_a_handle_on_imessage_goes_by_imessage_and_one_that_is_not_by_sms(hybrid: Hybrid) -> None:
    apple, android = sms_handle(), sms_handle()
    hybrid.mac.sms_only.add(android)
    client = hybrid.tenant.sdk()
    blue = client.chats.messages.send(apple, text="blue bubble", extra_body={"effect": "confetti"})
    green = client.chats.messages.send(android, text="green bubble", extra_body={"effect": "confetti"})
    assert wait_status(hybrid.tenant, apple, blue.message_id, "delivered")["protocol"] == "imessage"
    assert wait_status(hybrid.tenant, android, green.message_id, "delivered")["protocol"] == "sms"
    [imessage] = hybrid.imessage_sends("blue bubble")
    assert imessage.json["effectId"] == "com.apple.messages.effect.CKConfettiEffect"
    [create] = hybrid.twilio.creates()
    assert create.field("To") == [android] and create.field("Body") == ["green bubble"]  # no effect on SMS
    assert hybrid.imessage_sends("green bubble") == []
    asked = [c.query["address"] for c in hybrid.mac.calls("/handle/availability/imessage", "GET")]
    assert sorted(asked) == sorted([apple, android])
    # The answers are cached: the next messages do not ask again.
    again = client.chats.messages.send(android, text="green again")
    assert wait_status(hybrid.tenant, android, again.message_id, "delivered")["protocol"] == "sms"
    assert len(hybrid.mac.calls("/handle/availability/imessage", "GET")) == 2
    assert events_of(hybrid.server, green.message_id) == ["message.queued", "message.sent", "message.delivered"]


def test_error_22_from_messages_falls_back_to_sms_once(hybrid: Hybrid) -> None:
    who = sms_handle()
    hybrid.mac.bad_addresses.add(who)  # availability says yes, but Messages fails the send with error 22
    client = hybrid.tenant.sdk()
    sent = client.chats.messages.send(who, text="try blue first")
    msg = wait_status(hybrid.tenant, who, sent.message_id, "delivered")
    assert msg["protocol"] == "sms" and msg["error"] is None
    assert len(hybrid.imessage_sends("try blue first")) == 1
    assert [c.field("Body") for c in hybrid.twilio.creates()] == [["try blue first"]]
    wait_for(
        lambda: [w for w in hybrid.mac.delivered_webhooks if w["type"] == "message-send-error"],
        what="the Mac's send-error webhook",
    )
    # The Mac's error webhook and its polled copy do not fail the message that went by SMS.
    wait_for(lambda: hybrid.mac.calls("/message/query"), what="a reconciler pass")
    assert message(hybrid.tenant, who, sent.message_id)["status"] == "delivered"
    assert events_of(hybrid.server, sent.message_id) == ["message.queued", "message.sent", "message.delivered"]
    # The handle is now known to be SMS-only: the next message goes straight to Twilio.
    later = client.chats.messages.send(who, text="straight to SMS")
    assert wait_status(hybrid.tenant, who, later.message_id, "delivered")["protocol"] == "sms"
    assert hybrid.imessage_sends("straight to SMS") == []


def test_reply_to_is_refused_on_a_hybrid_number(hybrid: Hybrid) -> None:
    who = sms_handle()
    first = hybrid.tenant.sdk().chats.messages.send(who, text="parent")
    wait_status(hybrid.tenant, who, first.message_id, "delivered")
    with pytest.raises(blooio.BadRequestError) as exc:
        hybrid.tenant.sdk().chats.messages.send(
            who, text="child", extra_body={"reply_to": {"message_id": first.message_id}}
        )
    assert exc.value.body["code"] == "reply_target_not_supported"  # type: ignore[index]


def test_inbound_by_either_side_and_me_reports_the_joined_health(hybrid: Hybrid) -> None:
    who = sms_handle()
    hybrid.mac.inject_inbound(who, "hi by iMessage")
    assert hybrid.twilio.inject_inbound(who, hybrid.tenant.number, "hi by SMS").status == 200
    got = wait_for(lambda: len(hybrid.tenant.sdk().chats.messages.list(who).messages or []) == 2 or None)
    assert got
    protocols = sorted(x.protocol for x in hybrid.tenant.sdk().chats.messages.list(who).messages or [])
    assert protocols == ["imessage", "sms"]
    wait_device_info(hybrid_device(hybrid), status="online", imessage="online", sms="online")
    with hybrid.tenant.http() as http:
        [device] = http.get("/me").json()["devices"]
    assert device["status"] == "online" and device["last_seen"] > 0
    info = hybrid.number_row().device_info
    assert info["private_api"] is True and info["twilio"]["account_status"] == "active"
    hybrid.twilio.stop()
    wait_device_info(hybrid_device(hybrid), status="degraded", sms="offline")


def hybrid_device(h: Hybrid) -> Any:
    """What ``wait_device_info`` reads (a number row and the server): the BlueBubbles helper's duck type."""

    class _Device:
        server = h.server

        @staticmethod
        def number_row() -> Any:
            return h.number_row()

    return _Device()
