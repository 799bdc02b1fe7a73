"""Sending through BlueBubbles, via the official SDK against the fake server: what reaches the Mac, on the wire.

Each test gets a fresh fake Mac and a fresh organization whose only number is served by it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.bluebubbles_support import Device, start_device, wait_device_info
from tests.conftest import Server, unique_number
from tests.helpers import events_of, subscribe, wait_for, wait_status
from tests.receiver import Receiver

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def bluebubbles(server: Server) -> Iterator[Callable[..., Device]]:
    started: list[Device] = []

    def make(**options: Any) -> Device:
        device = start_device(server, **options)
        started.append(device)
        return device

    yield make
    for device in started:
        device.detach()
        device.fake.stop()


@pytest.fixture
def bb(bluebubbles: Callable[..., Device]) -> Device:
    return bluebubbles()


def _with_chat(bb: Device, handle: str) -> str:
    """Someone writes first: the Mac has the chat, openbloo learns its GUID. Returns the inbound message's GUID."""
    data = bb.fake.inject_inbound(handle, "hi there")
    wait_for(lambda: bb.messages(handle), what="the inbound message")
    return str(data["guid"])


def test_first_message_creates_the_chat_then_later_ones_use_message_text(bb: Device, receiver: Receiver) -> None:
    subscribe(bb.tenant, receiver.url)
    to = unique_number()
    client = bb.tenant.sdk()
    first = client.chats.messages.send(to, text="hello from openbloo")
    wait_status(bb.tenant, to, first.message_id, "delivered")
    [created] = bb.fake.calls("/chat/new")
    assert created.json["addresses"] == [to]
    assert created.json["message"] == "hello from openbloo"
    assert created.json["tempGuid"].startswith("openbloo-")
    assert created.json["method"] == "private-api"
    assert created.query["password"] == bb.fake.password

    second = client.chats.messages.send(to, text="and again")
    wait_status(bb.tenant, to, second.message_id, "delivered")
    [text] = bb.fake.calls("/message/text")
    assert text.json["chatGuid"] == f"iMessage;-;{to}"
    assert text.json["message"] == "and again"
    assert text.json["tempGuid"] != created.json["tempGuid"]
    assert len(bb.fake.calls("/chat/new")) == 1
    assert events_of(bb.server, second.message_id) == ["message.queued", "message.sent", "message.delivered"]


def test_effect_slam_goes_as_message_text_with_the_impact_effect_and_the_private_api(bb: Device) -> None:
    to = unique_number()
    _with_chat(bb, to)
    sent = bb.tenant.sdk().chats.messages.send(to, text="boom", extra_body={"effect": "slam"})
    wait_status(bb.tenant, to, sent.message_id, "delivered")
    [call] = bb.fake.calls("/message/text")
    assert call.json["effectId"] == "com.apple.MobileSMS.expressivesend.impact"
    assert call.json["method"] == "private-api"
    assert call.json["chatGuid"] == f"iMessage;-;{to}"
    assert bb.fake.messages_from_me()[-1].effect_id == "com.apple.MobileSMS.expressivesend.impact"


def test_reply_carries_the_parents_device_guid_and_part_index(bb: Device) -> None:
    to = unique_number()
    parent_guid = _with_chat(bb, to)
    parent = bb.messages(to)[0]
    assert parent["direction"] == "inbound"
    client = bb.tenant.sdk()
    reply_to = {"reply_to": {"message_id": parent["message_id"]}}
    reply = client.chats.messages.send(to, text="replying", extra_body=reply_to)
    wait_status(bb.tenant, to, reply.message_id, "delivered")
    [call] = bb.fake.calls("/message/text")
    assert call.json["selectedMessageGuid"] == parent_guid
    assert call.json["partIndex"] == 0
    assert call.json["method"] == "private-api"
    by_guid = client.chats.messages.send(
        to, text="to its 2nd part", extra_body={"reply_to": {"guid": parent_guid, "part_index": 1}}
    )
    wait_status(bb.tenant, to, by_guid.message_id, "delivered")
    assert bb.fake.calls("/message/text")[-1].json["selectedMessageGuid"] == parent_guid
    assert bb.fake.calls("/message/text")[-1].json["partIndex"] == 1

    # A reply to our own message, queued behind it: the parent's device GUID is only known once it went out.
    own = client.chats.messages.send(to, text="parent of mine")
    child = client.chats.messages.send(to, text="child", extra_body={"reply_to": {"message_id": own.message_id}})
    wait_status(bb.tenant, to, child.message_id, "delivered")
    own_guid = next(m.guid for m in bb.fake.messages_from_me() if m.text == "parent of mine")
    assert bb.fake.calls("/message/text")[-1].json["selectedMessageGuid"] == own_guid
    assert bb.fake.calls("/message/text")[-1].json["partIndex"] == 0


def test_attachment_is_downloaded_and_uploaded(bb: Device) -> None:
    to = unique_number()
    _with_chat(bb, to)
    bb.fake.files["cat.png"] = (PNG, "image/png")
    sent = bb.tenant.sdk().chats.messages.send(to, attachments=[f"{bb.fake.url}/fake/files/cat.png"])
    wait_status(bb.tenant, to, sent.message_id, "delivered")
    [call] = bb.fake.calls("/message/attachment")
    assert call.form["chatGuid"] == f"iMessage;-;{to}"
    assert call.form["name"] == "cat.png"
    assert call.form["tempGuid"].startswith("openbloo-")
    assert call.files["attachment"] == ("cat.png", len(PNG), "image/png")
    assert call.contents["attachment"] == PNG


def test_text_with_attachment_is_one_multipart_bubble(bb: Device) -> None:
    to = unique_number()
    _with_chat(bb, to)
    bb.fake.files["a.png"] = (PNG, "image/png")
    sent = bb.tenant.sdk().chats.messages.send(
        to, text="look", attachments=[{"url": f"{bb.fake.url}/fake/files/a.png", "name": "photo.png"}]
    )
    wait_status(bb.tenant, to, sent.message_id, "delivered")
    [upload] = bb.fake.calls("/attachment/upload")
    assert upload.files["attachment"][0] == "photo.png"
    [call] = bb.fake.calls("/message/multipart")
    parts = call.json["parts"]
    assert parts[0] == {"partIndex": 0, "text": "look"}
    assert parts[1]["partIndex"] == 1 and parts[1]["name"] == "photo.png" and parts[1]["attachment"]


def test_parts_go_as_multipart(bb: Device) -> None:
    to = unique_number()
    _with_chat(bb, to)
    bb.fake.files["b.png"] = (PNG, "image/png")
    sent = bb.tenant.sdk().chats.messages.send(
        to, parts=[{"text": "first"}, {"url": f"{bb.fake.url}/fake/files/b.png", "name": "b.png"}, {"text": "last"}]
    )
    wait_status(bb.tenant, to, sent.message_id, "delivered")
    [call] = bb.fake.calls("/message/multipart")
    assert [p.get("text") or p.get("name") for p in call.json["parts"]] == ["first", "b.png", "last"]
    assert [p["partIndex"] for p in call.json["parts"]] == [0, 1, 2]
    assert call.json["tempGuid"].startswith("openbloo-")


def test_new_group_is_created_with_chat_new_then_addressed_by_its_guid(bb: Device) -> None:
    a, b = unique_number(), unique_number()
    client = bb.tenant.sdk()
    first = client.chats.messages.send(f"{a},{b}", text="hello both")
    group_id = first.group_id
    wait_status(bb.tenant, group_id, first.message_id, "delivered")
    [created] = bb.fake.calls("/chat/new")
    assert sorted(created.json["addresses"]) == sorted([a, b])
    group_guid = next(m.chat.guid for m in bb.fake.messages_from_me())
    assert ";+;chat" in group_guid
    again = client.chats.messages.send(group_id, text="second")
    wait_status(bb.tenant, group_id, again.message_id, "delivered")
    [text] = bb.fake.calls("/message/text")
    assert text.json["chatGuid"] == group_guid


def test_private_api_off_refuses_effects_and_replies_but_sends_text_by_applescript(
    bluebubbles: Callable[..., Device],
) -> None:
    bb = bluebubbles(private_api=False)
    wait_device_info(bb, private_api=False, status="degraded")
    to = unique_number()
    _with_chat(bb, to)
    with bb.tenant.http() as http:
        r = http.post(f"/chats/{to}/messages", json={"text": "boom", "effect": "slam"})
        assert r.status_code == 400 and r.json()["code"] == "effect_not_supported", r.text
        parent = bb.messages(to)[0]["message_id"]
        r = http.post(f"/chats/{to}/messages", json={"text": "re", "reply_to": {"message_id": parent}})
        assert r.status_code == 400 and r.json()["code"] == "reply_target_not_supported", r.text
    sent = bb.tenant.sdk().chats.messages.send(to, text="plain")
    wait_status(bb.tenant, to, sent.message_id, "delivered")
    [call] = bb.fake.calls("/message/text")
    assert call.json["method"] == "apple-script"
    assert "effectId" not in call.json and "selectedMessageGuid" not in call.json


def test_offline_device_keeps_the_message_queued_and_sends_it_once_when_back(bb: Device) -> None:
    to = unique_number()
    _with_chat(bb, to)
    bb.fake.go_offline()
    sent = bb.tenant.sdk().chats.messages.send(to, text="while you were away")
    wait_for(lambda: bb.number_row().device_status == "offline", what="the device reported offline")
    me = bb.tenant.http().get("/me").json()
    assert me["devices"][0]["status"] == "offline"
    assert wait_status(bb.tenant, to, sent.message_id, "queued")["status"] == "queued"
    bb.fake.go_online()
    wait_status(bb.tenant, to, sent.message_id, "delivered")
    assert [c.json["message"] for c in bb.fake.calls("/message/text")] == ["while you were away"]


def test_me_reports_device_status_and_last_seen(bluebubbles: Callable[..., Device]) -> None:
    bb = bluebubbles()
    wait_device_info(bb, status="online")
    [device] = bb.tenant.sdk().me.retrieve().devices or []
    raw = bb.tenant.http().get("/me").json()["devices"][0]
    assert raw["status"] == "online" and isinstance(raw["last_seen"], int)
    assert device.phone_number == bb.tenant.number
    bb.fake.helper_connected = False
    wait_device_info(bb, status="degraded")
    assert bb.tenant.http().get("/me").json()["devices"][0]["status"] == "degraded"
