"""What every device transport shares: opt-outs refused at send time, numbers whose device cannot be used
staying queued, the migration giving existing numbers a callback token, and the BlueBubbles wire helpers.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy import select

from openbloo.db import models as m
from openbloo.db.writer import run_unit
from openbloo.devices.optouts import record_opt_in, record_opt_out
from openbloo.ids import now_ms
from openbloo.messages.rules import EFFECTS
from openbloo.transports.bluebubbles import wire
from tests.conftest import Server, Tenant, make_tenant, unique_number
from tests.helpers import message


def _opt_out(server: Server, number_id: str, handle: str) -> None:
    with server.runtime.engine.begin() as conn:
        conn.execute(sa.insert(m.opt_outs).values(number_id=number_id, handle=handle, opted_out_at=now_ms()))


def test_a_send_to_an_opted_out_handle_is_403_and_stores_nothing(tenant: Tenant) -> None:
    stopped, fine = unique_number(), unique_number()
    _opt_out(tenant.server, tenant.allocation_id, stopped)
    with tenant.http() as http:
        r = http.post(f"/chats/{stopped}/messages", json={"text": "hello?"})
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "recipient_opted_out" and r.json()["recipients"] == [stopped]
        group = http.post(f"/chats/{fine},{stopped}/messages", json={"text": "hi both"})
        assert group.status_code == 403 and group.json()["code"] == "recipient_opted_out", group.text
        assert http.post(f"/chats/{fine}/messages", json={"text": "you are fine"}).status_code == 202
    with tenant.server.runtime.engine.connect() as conn:
        keys = {
            r.chat_key for r in conn.execute(select(m.chats).where(m.chats.c.organization_id == tenant.organization_id))
        }
        groups = conn.execute(select(m.groups).where(m.groups.c.organization_id == tenant.organization_id)).all()
    assert keys == {fine} and groups == []


def test_opt_out_helpers_are_idempotent_and_start_lets_sends_through(tenant: Tenant) -> None:
    who = unique_number()
    engine = tenant.server.runtime.engine
    assert run_unit(engine, record_opt_out(tenant.allocation_id, who, now_ms())) is True
    assert run_unit(engine, record_opt_out(tenant.allocation_id, who, now_ms())) is False
    with tenant.http() as http:
        assert http.post(f"/chats/{who}/messages", json={"text": "x"}).status_code == 403
        assert run_unit(engine, record_opt_in(tenant.allocation_id, who)) is True
        assert http.post(f"/chats/{who}/messages", json={"text": "x"}).status_code == 202


def _queued_with(t: Tenant, error: str) -> None:
    to = unique_number()
    with t.http() as http:
        sent = http.post(f"/chats/{to}/messages", json={"text": "later"}).json()
    time.sleep(0.6)
    assert message(t, to, sent["message_id"])["status"] == "queued"
    with t.server.runtime.engine.connect() as conn:
        job = conn.execute(select(m.messages).where(m.messages.c.id == sent["message_id"])).one()
    assert job.job_state == "pending" and error in (job.job_last_error or ""), job.job_last_error
    assert t.http().get("/me").json()["devices"][0]["status"] == "offline"


def test_a_number_whose_transport_cannot_be_built_keeps_its_messages_queued(server: Server) -> None:
    config = {"twilio": {"account_sid": "AC" + "0" * 32, "api_url": "http://127.0.0.1:9"}}  # no auth token
    _queued_with(make_tenant(server, transport="twilio", transport_config=config), "No device is available")


def test_a_twilio_number_that_cannot_reach_twilio_keeps_its_messages_queued(server: Server) -> None:
    config = {"twilio": {"account_sid": "AC" + "0" * 32, "auth_token": "t" * 32, "api_url": "http://127.0.0.1:9"}}
    t = make_tenant(server, transport="twilio", transport_config=config)
    try:
        _queued_with(t, "Could not reach Twilio")
    finally:  # the device goes away: its transport stops checking an address that never answers
        with server.runtime.engine.begin() as conn:
            conn.execute(sa.update(m.numbers).where(m.numbers.c.id == t.allocation_id).values(transport_config={}))


def test_effect_names_all_map_to_apple_ids() -> None:
    assert set(wire.EFFECT_IDS) == set(EFFECTS)
    assert wire.EFFECT_IDS["slam"] == "com.apple.MobileSMS.expressivesend.impact"
    assert wire.EFFECT_IDS["invisible-ink"] == "com.apple.MobileSMS.expressivesend.invisibleink"


def test_chat_guids_are_one_chat_whatever_the_service_prefix() -> None:
    assert wire.chat_identity("iMessage;-;+15551234567") == (False, "+15551234567")
    assert wire.chat_identity("any;-;+15551234567") == wire.chat_identity("SMS;-;+15551234567")
    assert wire.chat_identity("iMessage;+;chat123") == (True, "chat123") == wire.chat_identity("any;+;chat123")
    assert wire.chat_identity("garbage") is None and wire.chat_identity("iMessage;x;y") is None
    assert set(wire.chat_variants("any;+;chat9")) == {"any;+;chat9", "iMessage;+;chat9", "SMS;+;chat9"}
    assert wire.ref_of_temp_guid(wire.temp_guid("msg_abc")) == "msg_abc"
    assert wire.ref_of_temp_guid(wire.temp_guid("msg_abc", 2)) is None
    assert wire.ref_of_temp_guid("temp-12345678") is None


def test_a_webhook_message_is_read_like_the_server_writes_it() -> None:
    body = {
        "type": "new-message",
        "data": {
            "guid": "7A1C-1", "text": "hi there\ufffc", "isFromMe": False, "dateCreated": 1767225600000,
            "handle": {"address": "+15551234567", "service": "iMessage"}, "error": 0, "itemType": 0,
            "attachments": [{"guid": "AT-1", "transferName": "a.jpg", "mimeType": "image/jpeg", "totalBytes": 3}],
            "chats": [{"guid": "SMS;-;+15551234567", "style": 45}], "associatedMessageGuid": None,
        },
    }  # fmt: skip
    event = wire.parse_event(body)
    assert event is not None and event.message is not None
    dm = event.message
    assert dm.text == "hi there" and dm.handle == "+15551234567" and not dm.is_from_me
    assert dm.chat is not None and not dm.chat.is_group and dm.protocol == "sms"
    assert dm.attachments[0]["name"] == "a.jpg" and dm.is_plain_message
    assert wire.parse_event({"type": "typing-indicator", "data": {"display": True}}).message is None  # type: ignore[union-attr]
    assert wire.parse_event(["not", "an", "event"]) is None
