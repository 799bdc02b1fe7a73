"""A Twilio number end to end: the official SDK sends, the fake Twilio takes the message and calls openbloo's
real, signed callback routes back (status and inbound), on both databases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import blooio
import httpx
import pytest
from sqlalchemy import select

from openbloo.db import models as m
from openbloo.events.signing import verify
from tests.conftest import Server, unique_number
from tests.fakes.twilio import sign
from tests.helpers import events_of, message, subscribe, wait_for, wait_status
from tests.receiver import Receiver
from tests.twilio_support import TwilioNumber, sms_handle, start_twilio_number, wait_health


@pytest.fixture
def twilio(server: Server, receiver: Receiver) -> Iterator[Callable[..., TwilioNumber]]:
    started: list[TwilioNumber] = []

    def make(**options: Any) -> TwilioNumber:
        number = start_twilio_number(server, **options)
        started.append(number)
        subscribe(number.tenant, receiver.url)  # the events these tests read are stored for a webhook
        return number

    yield make
    for number in started:
        number.detach()
        number.fake.stop()


@pytest.fixture
def tw(twilio: Callable[..., TwilioNumber]) -> TwilioNumber:
    return twilio()


def _opted_out(tw: TwilioNumber) -> list[str]:
    with tw.server.runtime.engine.connect() as conn:
        rows = conn.execute(select(m.opt_outs.c.handle).where(m.opt_outs.c.number_id == tw.tenant.allocation_id))
        return sorted(r.handle for r in rows)


def _post_status(tw: TwilioNumber, message_id: str, form: list[tuple[str, str]], signature: str | None) -> int:
    url = f"{tw.callback_url('status')}?message_id={message_id}"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return httpx.post(url, content=urlencode(form).encode(), headers=headers).status_code


def test_an_sms_with_media_reaches_twilio_with_its_status_callback_and_signed_callbacks_deliver_it(
    tw: TwilioNumber,
) -> None:
    receiver = Receiver().start()
    try:
        with tw.tenant.http() as http:
            hook = http.post("/webhooks", json={"webhook_url": receiver.url, "webhook_type": "status"}).json()
        to = sms_handle()
        media = ["https://cdn.example.com/a.jpg", "https://cdn.example.com/b.png"]
        sent = tw.tenant.sdk().chats.messages.send(to, text="hello by SMS", attachments=media)
        msg = wait_status(tw.tenant, to, sent.message_id, "delivered")
        assert msg["protocol"] == "sms"
        [create] = tw.fake.creates()
        assert create.field("StatusCallback") == [f"{tw.callback_url('status')}?message_id={sent.message_id}"]
        assert create.field("To") == [to] and create.field("From") == [tw.tenant.number]
        assert create.field("Body") == ["hello by SMS"] and create.field("MediaUrl") == media
        assert create.auth == (tw.fake.account_sid, tw.fake.auth_token)
        sid = next(iter(tw.fake.messages))
        assert tw.fake.message(sid)["status"] == "delivered"
        assert all(c.status == 204 for c in tw.fake.wait_for_callbacks(3))  # sending, sent, delivered
        assert events_of(tw.server, sent.message_id) == ["message.queued", "message.sent", "message.delivered"]
        got = wait_for(lambda: "message.delivered" in receiver.event_types(sent.message_id), what="the webhook")
        assert got
        delivered = next(r for r in receiver.events(sent.message_id) if r.event == "message.delivered")
        assert verify(hook["signing_secret"], delivered.headers["x-blooio-signature"], delivered.body)
        assert delivered.json["protocol"] == "sms" and delivered.json["message_id"] == sent.message_id
    finally:
        receiver.stop()


def test_an_unsigned_or_wrongly_signed_callback_is_403_and_changes_nothing(tw: TwilioNumber) -> None:
    to = unique_number()[:-4] + "2999"  # the fake stops this one at "sent"
    sent = tw.tenant.sdk().chats.messages.send(to, text="no receipt")
    wait_status(tw.tenant, to, sent.message_id, "sent")
    tw.fake.wait_for_callbacks(2)
    sid = next(iter(tw.fake.messages))
    form = [("MessageSid", sid), ("AccountSid", tw.fake.account_sid), ("MessageStatus", "delivered")]
    url = f"{tw.callback_url('status')}?message_id={sent.message_id}"
    assert _post_status(tw, sent.message_id, form, None) == 403
    assert _post_status(tw, sent.message_id, form, sign("not-the-auth-token", url, form)) == 403
    assert _post_status(tw, sent.message_id, form, sign(tw.fake.auth_token, url + "&x=1", form)) == 403
    tampered = [*form[:2], ("MessageStatus", "failed"), ("ErrorCode", "30007")]
    assert _post_status(tw, sent.message_id, tampered, sign(tw.fake.auth_token, url, form)) == 403
    wrong_token = url.replace(tw.number_row().inbound_token, "x" * 32)
    assert httpx.post(wrong_token, data=dict(form)).status_code == 404
    assert message(tw.tenant, to, sent.message_id)["status"] == "sent"
    assert events_of(tw.server, sent.message_id) == ["message.queued", "message.sent"]
    # The same callback, signed by Twilio's rules with the number's token over the URL it called, is accepted.
    assert _post_status(tw, sent.message_id, form, sign(tw.fake.auth_token, url, form)) == 204
    assert message(tw.tenant, to, sent.message_id)["status"] == "delivered"
    assert _post_status(tw, sent.message_id, form, sign(tw.fake.auth_token, url, form)) == 204  # a repeat: no change
    assert events_of(tw.server, sent.message_id) == ["message.queued", "message.sent", "message.delivered"]


def test_undelivered_with_an_error_code_fails_the_message_with_that_error(tw: TwilioNumber) -> None:
    to = unique_number()[:-4] + "3003"
    sent = tw.tenant.sdk().chats.messages.send(to, text="nobody home")
    msg = wait_status(tw.tenant, to, sent.message_id, "failed")
    assert msg["error"] == "twilio_30003: Unreachable destination handset"
    with tw.server.runtime.engine.connect() as conn:
        payload = conn.execute(
            select(m.events.c.payload).where(
                m.events.c.message_id == sent.message_id, m.events.c.type == "message.failed"
            )
        ).scalar_one()
    assert payload["error_code"] == "twilio_30003"


def test_inbound_sms_and_mms_appear_in_the_chat_and_as_message_received(tw: TwilioNumber) -> None:
    sender = sms_handle()
    sms = tw.fake.inject_inbound(sender, tw.tenant.number, "hi from a phone")
    assert sms.status == 200 and sms.content_type.startswith("text/xml")
    assert sms.body == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    media = [("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1", "image/jpeg")]
    mms = tw.fake.inject_inbound(sender, tw.tenant.number, "", media=media)
    assert mms.status == 200
    again = httpx.post(sms.url, content=urlencode(sms.form).encode(), headers={"X-Twilio-Signature": sms.signature,
                       "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert again.status_code == 200  # Twilio retried: answered, not stored twice
    listed = tw.tenant.sdk().chats.messages.list(sender, sort="asc")
    got = listed.messages or []
    assert [(x.direction, x.status, x.protocol, x.text) for x in got] == [
        ("inbound", "received", "sms", "hi from a phone"),
        ("inbound", "received", "sms", None),
    ]
    with tw.tenant.http() as http:
        stored = http.get(f"/chats/{sender}/messages/{got[1].message_id}").json()
    assert stored["attachments"] == [{"url": media[0][0], "name": "ME1.jpg"}]
    events = [events_of(tw.server, x.message_id) for x in got]
    assert events == [["message.received"], ["message.received"]]
    forged = httpx.post(
        tw.callback_url("inbound"), data={"From": sender, "Body": "forged", "MessageSid": "SM" + "1" * 32}
    )
    assert forged.status_code == 403
    assert len(tw.messages(sender)) == 2


def test_stop_blocks_sends_to_that_handle_until_start(tw: TwilioNumber) -> None:
    who, other = sms_handle(), sms_handle()
    client = tw.tenant.sdk()
    assert tw.fake.inject_inbound(who, tw.tenant.number, "Stop").status == 200
    assert _opted_out(tw) == [who]
    with pytest.raises(blooio.PermissionDeniedError) as exc:
        client.chats.messages.send(who, text="are you there?")
    body: Any = exc.value.body
    assert body["code"] == "recipient_opted_out" and body["recipients"] == [who]
    assert "opted out" in body["message"] and "START" in body["message"]
    wait_status(tw.tenant, other, client.chats.messages.send(other, text="others still get it").message_id, "delivered")
    assert tw.fake.inject_inbound(who, tw.tenant.number, "START").status == 200
    assert _opted_out(tw) == []
    back = client.chats.messages.send(who, text="welcome back")
    wait_status(tw.tenant, who, back.message_id, "delivered")
    assert [x["text"] for x in tw.messages(who)] == ["welcome back", "START", "Stop"]


def test_a_send_twilio_refuses_with_21610_fails_and_records_the_opt_out(tw: TwilioNumber) -> None:
    who = sms_handle()
    tw.fake.opt_out(who, tw.tenant.number)  # the handle texted STOP while openbloo did not hear it
    sent = tw.tenant.sdk().chats.messages.send(who, text="hello?")
    msg = wait_status(tw.tenant, who, sent.message_id, "failed")
    assert "21610" in msg["error"]
    assert _opted_out(tw) == [who]
    with pytest.raises(blooio.PermissionDeniedError) as exc:
        tw.tenant.sdk().chats.messages.send(who, text="again?")
    assert exc.value.body["code"] == "recipient_opted_out"  # type: ignore[index]


def test_rate_limits_and_server_errors_are_retried_then_delivered(tw: TwilioNumber) -> None:
    to = sms_handle()
    tw.fake.fail_next(2, status=429)
    tw.fake.fail_next(1, status=503)
    sent = tw.tenant.sdk().chats.messages.send(to, text="eventually")
    wait_status(tw.tenant, to, sent.message_id, "delivered")
    statuses = [r.status for r in tw.fake.creates()]
    assert statuses == [429, 429, 503, 201]
    assert len(tw.fake.messages) == 1


def test_an_invalid_number_fails_at_once(tw: TwilioNumber) -> None:
    to = "+15005550001"  # Twilio's magic number for 21211
    sent = tw.tenant.sdk().chats.messages.send(to, text="nope")
    msg = wait_status(tw.tenant, to, sent.message_id, "failed")
    assert "21211" in msg["error"]
    assert len(tw.fake.creates()) == 1


def test_what_sms_cannot_carry_is_refused_at_acceptance(tw: TwilioNumber) -> None:
    client = tw.tenant.sdk()
    a, b = sms_handle(), sms_handle()
    cases: list[tuple[str, dict[str, Any], str]] = [
        (f"{a},{b}", {"text": "hi both"}, "group_not_supported"),
        ("someone@example.com", {"text": "hi"}, "recipient_not_supported"),
        (a, {"text": "x" * 1601}, "text_too_long"),
        (a, {"text": "hi", "extra_body": {"reply_to": {"guid": "p:0/ABC"}}}, "reply_target_not_supported"),
    ]
    for chat_id, kwargs, code in cases:
        with pytest.raises(blooio.BadRequestError) as exc:
            client.chats.messages.send(chat_id, **kwargs)
        assert exc.value.body["code"] == code, (chat_id, exc.value.body)  # type: ignore[index]
    parts = [{"url": f"https://cdn.example.com/{i}.jpg"} for i in range(11)]
    with pytest.raises(blooio.BadRequestError) as many:
        client.chats.messages.send(a, parts=parts)
    assert many.value.body["code"] == "too_many_attachments"  # type: ignore[index]
    with tw.server.runtime.engine.connect() as conn:
        stored = conn.execute(select(m.messages.c.id).where(m.messages.c.organization_id == tw.tenant.organization_id))
        assert stored.all() == []
    assert tw.fake.creates() == []


def test_an_effect_is_accepted_and_goes_as_plain_sms(tw: TwilioNumber) -> None:
    to = sms_handle()
    sent = tw.tenant.sdk().chats.messages.send(to, text="boom", extra_body={"effect": "slam"})
    wait_status(tw.tenant, to, sent.message_id, "delivered")
    [create] = tw.fake.creates()
    assert create.field("Body") == ["boom"] and {k for k, _ in create.form} == {"To", "From", "Body", "StatusCallback"}
    longest = tw.tenant.sdk().chats.messages.send(to, text="y" * 1600)
    wait_status(tw.tenant, to, longest.message_id, "delivered")


def test_me_reports_the_twilio_device_and_a_refused_token_degrades_it(
    twilio: Callable[..., TwilioNumber], server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = twilio()
    wait_health(server, good.tenant.allocation_id, "online")
    to = sms_handle()
    wait_status(good.tenant, to, good.tenant.sdk().chats.messages.send(to, text="hi").message_id, "delivered")
    with good.tenant.http() as http:
        [device] = http.get("/me").json()["devices"]
        numbers = http.get("/me/numbers").text
    assert device["status"] == "online" and device["last_seen"] > 0
    assert good.fake.auth_token not in numbers
    bad = twilio(auth_token="wrong-token-0123456789")
    row = wait_health(server, bad.tenant.allocation_id, "degraded")
    assert "refused the credentials" in row.device_info["error"]
    assert "wrong-token-0123456789" not in str(row.device_info)
    to = sms_handle()
    sent = bad.tenant.sdk().chats.messages.send(to, text="waits for a good token")
    wait_for(lambda: len(bad.fake.creates()) >= 2, what="a retry")
    assert message(bad.tenant, to, sent.message_id)["status"] == "queued"
    bad.fake.stop()
    wait_health(server, bad.tenant.allocation_id, "offline")
    assert "twilio" in caplog.text.lower(), "the Twilio requests were logged"
    assert good.fake.auth_token not in caplog.text and "wrong-token-0123456789" not in caplog.text
