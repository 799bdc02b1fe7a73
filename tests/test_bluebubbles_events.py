"""What the Mac tells openbloo: webhooks (delivered, read, failed, inbound), their duplicates and variants, a
wrong callback token, and the reconciler recovering what the webhooks lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from openbloo.db import models as m
from tests.bluebubbles_support import Device, start_device
from tests.conftest import Server, unique_number
from tests.helpers import events_of, message, subscribe, wait_for, wait_status
from tests.receiver import Receiver


@pytest.fixture
def bluebubbles(server: Server, receiver: Receiver) -> Iterator[Callable[..., Device]]:
    started: list[Device] = []

    def make(**options: Any) -> Device:
        device = start_device(server, **options)
        started.append(device)
        subscribe(device.tenant, receiver.url)  # the events these tests read are stored for a webhook
        return device

    yield make
    for device in started:
        device.detach()
        device.fake.stop()


def _count(server: Server, table: Any, *where: Any) -> int:
    with server.runtime.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def _received_events(device: Device) -> list[dict[str, Any]]:
    with device.server.runtime.engine.connect() as conn:
        rows = conn.execute(
            select(m.events.c.payload).where(
                m.events.c.organization_id == device.tenant.organization_id, m.events.c.type == "message.received"
            )
        )
        return [r.payload for r in rows]


def test_delivered_and_read_arrive_by_webhook_once_each(bluebubbles: Callable[..., Device]) -> None:
    bb = bluebubbles(delivery_ms=30, read_ms=30)
    bb.fake.answer_delay = 0.2  # both new-message copies land before the send is answered
    to = unique_number()
    sent = bb.tenant.sdk().chats.messages.send(to, text="read me")
    wait_for(lambda: message(bb.tenant, to, sent.message_id)["time_read"], what="the read receipt")
    msg = message(bb.tenant, to, sent.message_id)
    assert msg["status"] == "delivered" and msg["protocol"] == "imessage"
    assert events_of(bb.server, sent.message_id) == [
        "message.queued",
        "message.sent",
        "message.delivered",
        "message.read",
    ]
    # Our own message came back twice as new-message (plain and with tempGuid): never stored as inbound.
    copies = [w for w in bb.fake.delivered_webhooks if w["type"] == "new-message"]
    assert len(copies) == 2 and sum("tempGuid" in w["data"] for w in copies) == 1
    assert [x["direction"] for x in bb.messages(to)] == ["outbound"]
    assert _received_events(bb) == []


def test_send_error_webhook_and_the_500_without_data_fail_the_message(bluebubbles: Callable[..., Device]) -> None:
    bb = bluebubbles()
    bad = unique_number()
    bb.fake.bad_addresses.add(bad)
    sent = bb.tenant.sdk().chats.messages.send(bad, text="nobody home")
    wait_status(bb.tenant, bad, sent.message_id, "failed")
    # The send's 500 carries no message; the webhook that follows names Messages' error code.
    wait_for(lambda: "error 22" in message(bb.tenant, bad, sent.message_id)["error"], what="the error code")
    assert events_of(bb.server, sent.message_id)[-1] == "message.failed"

    to = unique_number()
    bb.fake.fail_next_send(error=4)
    quirk = bb.tenant.sdk().chats.messages.send(to, text="unlucky")
    failed = wait_status(bb.tenant, to, quirk.message_id, "failed")
    assert failed["error"]
    assert len(bb.fake.calls("/chat/new")) == 2, "a message the Mac created with an error is not sent again"


def test_inbound_dm_appears_in_the_chat_with_one_event_even_when_repeated(bluebubbles: Callable[..., Device]) -> None:
    bb = bluebubbles()
    who = unique_number()
    data = bb.fake.inject_inbound(who, "hello openbloo")
    [got] = wait_for(lambda: bb.messages(who), what="the inbound message")
    assert got["direction"] == "inbound" and got["status"] == "received" and got["text"] == "hello openbloo"
    # The same webhook again (a replay, or the reconciler finding it): nothing new.
    r = httpx.post(bb.callback_url(), json={"type": "new-message", "data": data})
    assert r.status_code == 200
    assert len(bb.messages(who)) == 1
    [event] = _received_events(bb)
    assert event["message_id"] == got["message_id"] and event["sender"] == who and event["text"] == "hello openbloo"
    assert event["external_id"] == who and event["internal_id"] == bb.tenant.number


def test_inbound_group_message_lands_in_one_group(bluebubbles: Callable[..., Device]) -> None:
    bb = bluebubbles()
    a, b = unique_number(), unique_number()
    bb.fake.inject_inbound(a, "hi all", participants=[b])

    def groups() -> list[Any]:
        with bb.server.runtime.engine.connect() as conn:
            return list(conn.execute(select(m.groups).where(m.groups.c.organization_id == bb.tenant.organization_id)))

    [group] = wait_for(groups, what="the group")
    assert sorted(group.participants_key.split(",")) == sorted([a, b])
    assert group.chat_guid.startswith("iMessage;+;chat")
    bb.fake.inject_inbound(b, "hello back", participants=[a])
    wait_for(lambda: len(bb.messages(group.id)) == 2, what="the second group message")
    assert {x["sender"] for x in bb.messages(group.id)} == {a, b}
    assert len(groups()) == 1
    assert {e["group_id"] for e in _received_events(bb)} == {group.id}
    assert bb.messages(a) == [] and bb.messages(b) == [], "group messages never leak into a 1:1 chat"


def test_one_conversation_whatever_guid_variant_the_mac_reports(bluebubbles: Callable[..., Device]) -> None:
    bb = bluebubbles(dm_prefix="any")
    who = unique_number()
    for prefix in ("iMessage", "any", "SMS"):
        bb.fake.inject_inbound(who, f"via {prefix}", chat_guid=f"{prefix};-;{who}")
    wait_for(lambda: len(bb.messages(who)) == 3, what="three messages in one chat")
    assert _count(bb.server, m.groups, m.groups.c.organization_id == bb.tenant.organization_id) == 0
    assert _count(bb.server, m.chats, m.chats.c.organization_id == bb.tenant.organization_id) == 1
    # A reply goes to a chat the Mac reported for this person, not to a new one.
    sent = bb.tenant.sdk().chats.messages.send(who, text="one chat")
    wait_status(bb.tenant, who, sent.message_id, "delivered")
    assert bb.fake.calls("/message/text")[-1].json["chatGuid"] in {f"{p};-;{who}" for p in ("iMessage", "any", "SMS")}
    assert bb.fake.calls("/chat/new") == []

    a, b = unique_number(), unique_number()
    bb.fake.inject_inbound(a, "group one", participants=[b], chat_guid="iMessage;+;chat424242")
    bb.fake.inject_inbound(b, "group two", participants=[a], chat_guid="any;+;chat424242")
    wait_for(lambda: len(_received_events(bb)) == 5, what="both group messages")
    assert _count(bb.server, m.groups, m.groups.c.organization_id == bb.tenant.organization_id) == 1


def test_wrong_or_missing_callback_token_is_404_and_changes_nothing(bluebubbles: Callable[..., Device]) -> None:
    bb = bluebubbles()
    who = unique_number()
    payload = bb.fake.inject_inbound(who, "real one")
    wait_for(lambda: bb.messages(who), what="the inbound message")
    forged = dict(payload, guid="FORGED-GUID", text="forged")
    base = f"{bb.server.root_url}/callbacks/bluebubbles"
    for url in (f"{base}/not-the-token", f"{base}/{bb.number_row().inbound_token}x", f"{base}/"):
        r = httpx.post(url, json={"type": "new-message", "data": forged})
        assert 400 <= r.status_code < 500, (url, r.status_code)
    r = httpx.post(f"{base}/wrong", json={"type": "new-message", "data": forged})
    assert r.json()["code"] == "not_found" and r.json()["error"] == "ApiError"
    assert [x["text"] for x in bb.messages(who)] == ["real one"]
    assert httpx.post(bb.callback_url(), content=b"not json").status_code == 400


def test_reconciler_recovers_a_lost_inbound_message(bluebubbles: Callable[..., Device]) -> None:
    bb = bluebubbles()
    bb.fake.lose_webhooks(1)
    who = unique_number()
    bb.fake.inject_inbound(who, "you missed me")
    [got] = wait_for(lambda: bb.messages(who), timeout=10, what="the reconciler to find the lost message")
    assert got["text"] == "you missed me"
    assert [w["type"] for w in bb.fake.lost_webhooks] == ["new-message"]
    assert bb.fake.calls("/message/query"), "found by polling message/query"
    assert bb.number_row().sync_cursor is not None


def test_reconciler_recovers_lost_delivery_receipts(bluebubbles: Callable[..., Device]) -> None:
    bb = bluebubbles(delivery_ms=None)
    to = unique_number()
    bb.fake.lose_webhooks(2)  # both new-message copies of the send
    sent = bb.tenant.sdk().chats.messages.send(to, text="did it arrive?")
    wait_status(bb.tenant, to, sent.message_id, "sent")
    [mine] = bb.fake.messages_from_me()
    # Created long ago for the Mac, so message/query from the cursor no longer finds it: only the
    # re-check by GUID of messages still "sent" can.
    mine.date_created -= 600_000
    bb.fake.lose_webhooks(1)
    bb.fake.deliver(mine.guid)
    wait_status(bb.tenant, to, sent.message_id, "delivered", timeout=10)
    assert bb.fake.calls(f"/message/{mine.guid}", method="GET")
    assert events_of(bb.server, sent.message_id).count("message.delivered") == 1


def test_the_password_never_reaches_the_logs_or_the_api(
    bluebubbles: Callable[..., Device], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bb = bluebubbles(password="s3cret-Pa55word-xyz")
    to = unique_number()
    sent = bb.tenant.sdk().chats.messages.send(to, text="quiet")
    wait_status(bb.tenant, to, sent.message_id, "delivered")
    bb.fake.go_offline()
    wait_for(lambda: bb.number_row().device_status == "offline", what="offline")
    assert bb.fake.password not in caplog.text
    assert "password=***" in caplog.text, "the device requests were logged, with the password redacted"
    with bb.tenant.http() as http:
        for path in ("/me", "/me/numbers"):
            assert bb.fake.password not in http.get(path).text
