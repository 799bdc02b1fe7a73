"""Delivery through the simulator device: protocols, receipts, test handles, retries, events, cancel."""

from __future__ import annotations

import time

from openbloo.transports.simulator import read_log
from tests.conftest import Tenant
from tests.helpers import events_of, message, path_id, send, subscribe, wait_for, wait_status
from tests.receiver import Receiver


def test_imessage_handle_is_delivered_then_read(tenant: Tenant, receiver: Receiver) -> None:
    subscribe(tenant, receiver.url)
    client = tenant.sdk()
    sent = client.chats.messages.send("+15552001234", text="hello")
    assert sent.status == "queued"
    msg = wait_status(tenant, "+15552001234", sent.message_id, "delivered")
    assert msg["protocol"] == "imessage"
    assert msg["time_delivered"] >= msg["time_sent"]
    status = client.chats.messages.get_status(sent.message_id, chat_id="+15552001234")
    assert status.status == "delivered" and status.protocol == "imessage" and status.error is None
    wait_for(lambda: message(tenant, "+15552001234", sent.message_id)["time_read"], what="time_read")
    assert events_of(tenant.server, sent.message_id) == [
        "message.queued",
        "message.sent",
        "message.delivered",
        "message.read",
    ]


def test_sms_only_handle_goes_out_by_sms_and_is_never_read(tenant: Tenant, receiver: Receiver) -> None:
    subscribe(tenant, receiver.url)
    sent = send(tenant, "+15552001239", text="plain", effect="confetti")
    msg = wait_status(tenant, "+15552001239", sent["message_id"], "delivered")
    assert msg["protocol"] == "sms"
    assert msg["error"] is None
    time.sleep(0.3)
    assert message(tenant, "+15552001239", sent["message_id"])["time_read"] is None
    assert "message.read" not in events_of(tenant.server, sent["message_id"])


def test_email_handle_is_imessage(tenant: Tenant) -> None:
    sent = send(tenant, "Someone@Example.com", text="hi")
    msg = wait_status(tenant, "someone@example.com", sent["message_id"], "delivered")
    assert msg["protocol"] == "imessage"


def test_04xx_handle_fails_permanently_with_error(tenant: Tenant, receiver: Receiver) -> None:
    subscribe(tenant, receiver.url)
    sent = send(tenant, "+15552010412", text="doomed")
    msg = wait_status(tenant, "+15552010412", sent["message_id"], "failed")
    assert msg["error"]
    status = tenant.sdk().chats.messages.get_status(sent["message_id"], chat_id="+15552010412")
    assert status.status == "failed" and status.error
    assert events_of(tenant.server, sent["message_id"])[-1] == "message.failed"


def test_05xN_handle_fails_transiently_n_times_then_delivers(tenant: Tenant, simulator_state: str) -> None:
    sent = send(tenant, "+15552010523", text="eventually")
    wait_status(tenant, "+15552010523", sent["message_id"], "delivered")
    attempts = [e["outcome"] for e in read_log_path(simulator_state) if e["message_id"] == sent["message_id"]]
    assert attempts == ["transient_failure", "transient_failure", "transient_failure", "sent"]


def test_06xx_handle_is_sent_but_never_delivered(tenant: Tenant) -> None:
    sent = send(tenant, "+15552010634", text="into the void")
    wait_status(tenant, "+15552010634", sent["message_id"], "sent")
    time.sleep(0.3)
    assert message(tenant, "+15552010634", sent["message_id"])["status"] == "sent"


def test_effect_and_text_array_are_delivered_in_order(tenant: Tenant, simulator_state: str) -> None:
    sent = send(tenant, "+15552003333", text=["one", "two", "three"], effect="slam")
    ids = sent["message_ids"]
    for mid in ids:
        wait_status(tenant, "+15552003333", mid, "delivered")
    order = [e["message_id"] for e in read_log_path(simulator_state) if e["message_id"] in ids]
    assert order == ids


def test_inbound_message_appears_in_chat_and_chat_list(tenant: Tenant, receiver: Receiver) -> None:
    subscribe(tenant, receiver.url)
    with tenant.http() as http:
        r = http.post("/simulator/inbound", json={"from": "+15552004444", "text": "hi there"})
        assert r.status_code == 201, r.text
        inbound_id = r.json()["message_id"]
        listed = tenant.sdk().chats.messages.list("+15552004444")
        assert [m_.message_id for m_ in listed.messages or []] == [inbound_id]
        item = (listed.messages or [])[0]
        assert item.direction == "inbound" and item.status == "received" and item.text == "hi there"
        chats = http.get("/chats").json()
        assert [c["id"] for c in chats["chats"]] == ["+15552004444"]
        assert chats["chats"][0]["inbound_count"] == 1
        assert chats["chats"][0]["last_message"]["direction"] == "inbound"
    assert events_of(tenant.server, inbound_id) == ["message.received"]


def test_inbound_route_refuses_numbers_outside_the_pool(tenant: Tenant, other_tenant: Tenant) -> None:
    with tenant.http() as http:
        r = http.post("/simulator/inbound", json={"from": "+15552004445", "to": other_tenant.number, "text": "x"})
    assert r.status_code == 403
    assert r.json()["code"] == "forbidden"


def test_cancel_a_queued_message_held_behind_a_retry(tenant: Tenant, simulator_state: str) -> None:
    chat = "+15552010539"  # 05x9: nine transient failures before it goes out
    head = send(tenant, chat, text="head")["message_id"]
    behind = send(tenant, chat, text="behind")["message_id"]
    with tenant.http() as http:
        r = http.delete(f"/chats/{path_id(chat)}/messages/{behind}")
        assert r.status_code == 200, r.text
        assert r.json() == {"message_id": behind, "cancelled": True, "status": "cancelled"}
        wait_status(tenant, chat, head, "delivered", timeout=20)
        assert message(tenant, chat, behind)["status"] == "cancelled"
        r = http.delete(f"/chats/{path_id(chat)}/messages/{head}")
        assert r.status_code == 409
        assert r.json()["code"] == "message_not_cancellable"
    assert behind not in {e["message_id"] for e in read_log_path(simulator_state)}


def test_cancel_of_another_orgs_message_is_404(tenant: Tenant, other_tenant: Tenant) -> None:
    mid = send(tenant, "+15552005555", text="mine")["message_id"]
    with other_tenant.http() as http:
        r = http.delete(f"/chats/{path_id('+15552005555')}/messages/{mid}")
    assert r.status_code == 404


def test_me_usage_counts_outbound_and_inbound(tenant: Tenant) -> None:
    send(tenant, "+15552006666", text=["a", "b"])
    with tenant.http() as http:
        http.post("/simulator/inbound", json={"from": "+15552006666", "text": "c"})
    usage = tenant.sdk().me.retrieve().usage
    assert usage is not None
    assert usage.outbound_messages == 2 and usage.inbound_messages == 1
    assert usage.last_message_sent is not None


def read_log_path(path: str) -> list[dict[str, object]]:
    from pathlib import Path

    return read_log(Path(path))
