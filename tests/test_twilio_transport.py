"""TwilioTransport against the fake: send, the signed callback lifecycle, opt-out, finding sends, resume, check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from openbloo.ids import now_ms
from openbloo.transports.base import Capability, PermanentError, TransientError
from openbloo.transports.twilio import MAX_BODY_CHARS, TwilioTransport
from tests.conftest import free_port
from tests.fakes.twilio import FakeTwilio
from tests.helpers import wait_until
from tests.twilio_support import FROM, TO, Receiver, RecordingSink, outgoing


@dataclass
class Env:
    fake: FakeTwilio
    receiver: Receiver
    transport: TwilioTransport
    sink: RecordingSink

    def new_transport(self, **kwargs: Any) -> TwilioTransport:
        values: dict[str, Any] = {"api_url": self.fake.url, "status_callback_url": f"{self.receiver.url}/twilio/status"}
        values.update(kwargs)
        return TwilioTransport(FROM, self.fake.account_sid, self.fake.auth_token, **values)


@pytest.fixture
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    step = getattr(request, "param", 0.01)
    fake = FakeTwilio(step_delay=step).start()
    receiver = Receiver().start()
    fake.inbound_url = f"{receiver.url}/twilio/inbound"
    sink = RecordingSink()
    e = Env(fake, receiver, None, sink)  # type: ignore[arg-type]
    e.transport = e.new_transport()
    receiver.transport = e.transport
    await e.transport.start(sink)
    try:
        yield e
    finally:
        await e.transport.close()
        receiver.stop()
        fake.stop()


async def test_send_reaches_twilio_and_signed_callbacks_deliver(env: Env) -> None:
    msg = outgoing()
    receipt = await env.transport.send(msg)
    assert receipt.protocol == "sms" and receipt.provider_id and receipt.provider_id.startswith("SM")
    (rec,) = env.fake.creates()
    assert rec.field("StatusCallback") == [f"{env.receiver.url}/twilio/status?message_id={msg.message_id}"]
    assert rec.field("To") == [TO] and rec.field("From") == [FROM] and rec.field("Body") == [msg.text]
    await wait_until(lambda: "delivered" in env.sink.statuses_of(msg.message_id))
    assert env.sink.statuses_of(msg.message_id) == ["sent", "delivered"]  # "sending" is not news
    assert all(u.provider_id == receipt.provider_id and u.protocol == "sms" for u in env.sink.updates)
    assert env.receiver.answers == [("status", 204)] * 3
    assert env.fake.message(receipt.provider_id)["status"] == "delivered"


async def test_undelivered_records_the_error_code(env: Env) -> None:
    msg = outgoing(to="+15551233003")
    await env.transport.send(msg)
    await wait_until(lambda: "failed" in env.sink.statuses_of(msg.message_id))
    failed = [u for u in env.sink.updates if u.status == "failed"]
    assert failed[0].error == "twilio_30003: Unreachable destination handset"


async def test_attachments_go_as_repeated_media_urls_and_effects_are_dropped(env: Env) -> None:
    attachments = ({"url": "https://example.com/a.jpg", "name": "a.jpg"}, {"url": "https://example.com/b.pdf"})
    receipt = await env.transport.send(outgoing(text=None, attachments=attachments, effect="slam"))
    (rec,) = env.fake.creates()
    assert rec.field("MediaUrl") == ["https://example.com/a.jpg", "https://example.com/b.pdf"]
    assert sorted(k for k, _ in rec.form) == ["From", "MediaUrl", "MediaUrl", "StatusCallback", "To"]
    assert receipt.provider_id and receipt.provider_id.startswith("MM")
    assert env.transport.capabilities == {Capability.SMS, Capability.ATTACHMENTS}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"is_group": True, "recipients": (TO, "+15559998888")}, "group_not_supported"),
        ({"text": "x" * (MAX_BODY_CHARS + 1)}, "text_too_long"),
        ({"attachments": tuple({"url": f"https://example.com/{i}.jpg"} for i in range(11))}, "too_many_attachments"),
        ({"text": None}, "empty_message"),
    ],
)
async def test_what_sms_cannot_carry_is_refused_before_twilio(env: Env, change: dict[str, Any], code: str) -> None:
    with pytest.raises(PermanentError) as exc:
        await env.transport.send(outgoing(**change))
    assert exc.value.code == code
    assert env.fake.requests == []


async def test_longest_body_goes(env: Env) -> None:
    await env.transport.send(outgoing(text="x" * MAX_BODY_CHARS))
    assert len(env.fake.creates()) == 1


async def test_stop_blocks_sends_until_start(env: Env) -> None:
    answer = await env.fake.ainject_inbound(TO, FROM, "  Stop ")
    assert answer.status == 200 and answer.content_type.startswith("text/xml")
    assert answer.body == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    assert env.receiver.opt_outs[(TO, FROM)] == "stop"
    assert env.sink.messages[-1].text == "  Stop " and env.sink.messages[-1].sender == TO
    with pytest.raises(PermanentError) as exc:
        await env.transport.send(outgoing())
    assert exc.value.code == "twilio_21610"
    await env.fake.ainject_inbound(TO, FROM, "START")
    assert env.receiver.opt_outs[(TO, FROM)] == "start"
    assert (await env.transport.send(outgoing())).provider_id


async def test_find_sent_finds_what_went_and_nothing_else(env: Env) -> None:
    msg = outgoing(text="find me")
    receipt = await env.transport.send(msg)
    env.fake.wait_for_status(receipt.provider_id or "", "delivered")
    found = await env.transport.find_sent(msg)
    assert found is not None and found.provider_id == receipt.provider_id and found.protocol == "sms"
    assert await env.transport.find_sent(outgoing(text="never sent")) is None
    assert await env.transport.find_sent(outgoing(text="find me", to="+15550001111")) is None
    # A job accepted after the message went cannot be that message.
    assert await env.transport.find_sent(replace(msg, time_accepted=now_ms() + 3_600_000)) is None
    listing = next(r for r in env.fake.requests if r.method == "GET")
    assert ("To", TO) in listing.query and ("From", FROM) in listing.query
    assert any(k == "DateSent>" for k, _ in listing.query)


@pytest.mark.parametrize("env", [5.0], indirect=True)
async def test_find_sent_sees_a_message_still_queued(env: Env) -> None:
    msg = outgoing(text="still in the queue")
    receipt = await env.transport.send(msg)
    assert env.fake.message(receipt.provider_id or "")["date_sent"] is None
    found = await env.transport.find_sent(msg)
    assert found is not None and found.provider_id == receipt.provider_id
    lists = [r.query for r in env.fake.requests if r.method == "GET"]
    assert len(lists) == 2 and not any(k.startswith("DateSent") for k, _ in lists[1])  # the undated second look


async def test_find_sent_skips_sids_openbloo_already_holds(env: Env) -> None:
    first = await env.transport.send(outgoing(text="ok"))
    second_msg = outgoing(text="ok")
    second = await env.transport.send(second_msg)

    async def claimed(sid: str) -> str | None:
        # The first send's sid is held by another message; the second's by the very message looked for
        # (a status callback stored it before the send's answer was recorded): that one is still a match.
        return "msg_first" if sid == first.provider_id else second_msg.message_id if sid == second.provider_id else None

    looker = env.new_transport(claimed=claimed)
    try:
        found = await looker.find_sent(second_msg)
    finally:
        await looker.close()
    assert found is not None and found.provider_id == second.provider_id


async def test_an_answer_lost_after_twilio_took_it_is_not_sent_twice(env: Env) -> None:
    msg = outgoing(text="exactly once")
    env.fake.lose_next_answers(1)
    with pytest.raises(TransientError) as exc:
        await env.transport.send(msg)
    assert exc.value.code == "twilio_http_502"
    receipt = await env.transport.send(replace(msg, attempt=2))
    assert len(env.fake.creates()) == 1
    assert receipt.provider_id == next(iter(env.fake.messages))


async def test_a_refused_attempt_is_retried_without_a_lookup(env: Env) -> None:
    msg = outgoing()
    env.fake.fail_next(1, status=429, retry_after=1)
    with pytest.raises(TransientError) as exc:
        await env.transport.send(msg)
    assert exc.value.retry_after == 1.0
    await env.transport.send(replace(msg, attempt=2))
    assert [r.method for r in env.fake.requests] == ["POST", "POST"]


async def test_a_retry_from_another_process_looks_first(env: Env) -> None:
    msg = outgoing(text="retried elsewhere")
    await env.transport.send(msg)
    other = env.new_transport()
    try:
        await other.send(replace(msg, attempt=2))
    finally:
        await other.close()
    assert len(env.fake.creates()) == 1


async def test_resume_reports_what_was_missed(env: Env) -> None:
    msg = outgoing(to="+15551233007")
    silent = env.new_transport(status_callback_url=f"http://127.0.0.1:{free_port()}/gone")
    try:
        receipt = await silent.send(msg)
    finally:
        await silent.close()
    env.fake.wait_for_status(receipt.provider_id or "", "undelivered")
    await env.transport.resume(msg, receipt)
    await wait_until(lambda: env.sink.statuses_of(msg.message_id))
    (update,) = env.sink.updates
    assert update.status == "failed" and update.error == "twilio_30007: Message filtered by the carrier"


async def test_check_reports_in_plain_words(env: Env) -> None:
    result = await env.transport.check()
    assert result.reachable and result.usable, result
    assert "works" in result.details[0] and FROM in result.details[0]
    text = "\n".join(result.details)
    assert env.fake.auth_token not in text  # the account resource carries the token; it is never echoed


async def test_check_wrong_token(env: Env) -> None:
    bad = TwilioTransport(
        FROM, env.fake.account_sid, "not-the-token-9876", api_url=env.fake.url, status_callback_url="x"
    )
    try:
        result = await bad.check()
    finally:
        await bad.close()
    assert result.reachable and not result.usable
    assert "refused the credentials" in result.details[0]
    assert "not-the-token-9876" not in "".join(result.details)
    assert any("…9876" in d for d in result.details)


async def test_check_unreachable() -> None:
    t = TwilioTransport(
        FROM, "AC" + "2" * 32, "tok-abcdef123", api_url=f"http://127.0.0.1:{free_port()}", status_callback_url="x"
    )
    try:
        result = await t.check()
    finally:
        await t.close()
    assert not result.reachable and not result.usable and "cannot be reached" in result.details[0]


async def test_check_suspended_account_and_foreign_number(env: Env) -> None:
    env.fake.account_status = "suspended"
    result = await env.transport.check()
    assert result.reachable and not result.usable and "suspended" in result.details[0]
    env.fake.account_status = "active"
    env.fake.numbers = {"+15550009999"}
    result = await env.transport.check()
    assert result.reachable and not result.usable
    assert any("not a phone number of this account" in d for d in result.details)


def test_repr_hides_the_token() -> None:
    t = TwilioTransport(FROM, "AC" + "3" * 32, "abcdefabcdefabcdef1234", status_callback_url="https://x.example/cb")
    assert "abcdefabcdefabcdef1234" not in repr(t) and "…1234" in repr(t)
    assert t.api_url == "https://api.twilio.com"
    assert t.status_callback_for("msg_1") == "https://x.example/cb?message_id=msg_1"
