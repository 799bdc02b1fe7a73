"""Twilio callbacks: X-Twilio-Signature checks (vectors, the fake's signed POSTs, tampering), parsers, keywords."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openbloo.transports.twilio import (
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    TwilioTransport,
    compute_signature,
    empty_twiml,
    opt_out_action,
    parse_inbound,
    parse_status_callback,
    verify_signature,
)
from tests.fakes.twilio import FakeTwilio, sign
from tests.twilio_support import Receiver, RecordingSink, outgoing

NUMBER = "+15559870000"
HANDLE = "+15551230000"

# The twilio library's own test vector (token 12345) and the spec's SMS-shaped example.
LIB_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
LIB_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
SMS_URL = "https://example.com/twilio/inbound"
SMS_PARAMS = {
    "AccountSid": "AC00000000000000000000000000000000",
    "Body": "hello",
    "From": "+15551230000",
    "MessageSid": "SM11111111111111111111111111111111",
    "To": "+15559870000",
}


def test_known_signature_vectors() -> None:
    assert compute_signature("12345", LIB_URL, LIB_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert verify_signature("12345", LIB_URL, LIB_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    # Signed over the URL with :443: accepted for the port-less URL too, and the other way round.
    assert verify_signature("12345", LIB_URL, LIB_PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=")
    assert verify_signature("12345", LIB_URL.replace(".com/", ".com:443/"), LIB_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert compute_signature("test_auth_token", SMS_URL, SMS_PARAMS) == "M0pzwYqgfU1TPxOv2MMFpuYBaZI="


def test_repeated_fields_as_pairs_or_lists() -> None:
    pairs = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]
    assert verify_signature("12345", LIB_URL, pairs, "IK+Dwps556ElfBT0I3Rgjkr1wJU=")
    as_lists = {"Sid": ["CA123"], "SidAccount": ["AC123"], "Digits": ["5678", "1234"]}
    assert verify_signature("12345", LIB_URL, as_lists, "IK+Dwps556ElfBT0I3Rgjkr1wJU=")


@pytest.mark.parametrize(
    ("token", "url", "params", "signature"),
    [
        ("12345", LIB_URL, LIB_PARAMS, None),
        ("12345", LIB_URL, LIB_PARAMS, ""),
        ("wrong", LIB_URL, LIB_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("", LIB_URL, LIB_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("12345", LIB_URL, {**LIB_PARAMS, "Digits": "1235"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("12345", LIB_URL, {**LIB_PARAMS, "Extra": "x"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("12345", LIB_URL.replace("foo=1", "foo=2"), LIB_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("12345", LIB_URL.replace("https", "http"), LIB_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("12345", "::not a url::", LIB_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ],
)
def test_bad_signatures_fail(token: str, url: str, params: dict[str, str], signature: str | None) -> None:
    assert not verify_signature(token, url, params, signature)


field_names = st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1, max_size=12)
field_values = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@settings(max_examples=100, deadline=None, database=None)
@given(
    token=st.text(min_size=1, max_size=40),
    path=st.text(st.sampled_from("abcxyz/_-09"), max_size=20),
    form=st.lists(st.tuples(field_names, field_values), max_size=8),
)
def test_property_independent_signer_agrees_and_tampering_fails(
    token: str, path: str, form: list[tuple[str, str]]
) -> None:
    url = f"https://hooks.example.com/{path}?message_id=msg_1"
    signature = sign(token, url, form)  # the fake's own implementation of the algorithm
    assert verify_signature(token, url, form, signature)
    assert not verify_signature(token + "x", url, form, signature)
    assert not verify_signature(token, url + "2", form, signature)
    assert not verify_signature(token, url, [*form, ("_tampered", "1")], signature)
    counts = Counter(name for name, _ in form)
    for i, (name, value) in enumerate(form):
        if counts[name] == 1:  # one value changed (the signed string gets longer, so it cannot collide)
            assert not verify_signature(token, url, [*form[:i], (name, value + "!"), *form[i + 1 :]], signature)
            break


# -- the fake's signed callbacks through a receiver that checks them ----------------------------------------


@pytest.fixture
async def wired() -> AsyncIterator[tuple[FakeTwilio, Receiver, RecordingSink]]:
    fake = FakeTwilio(step_delay=0.01).start()
    receiver = Receiver().start()
    fake.inbound_url = f"{receiver.url}/twilio/inbound?number={NUMBER.replace('+', '%2B')}"
    transport = TwilioTransport(
        NUMBER,
        fake.account_sid,
        fake.auth_token,
        api_url=fake.url,
        status_callback_url=f"{receiver.url}/twilio/status?number=%2B15559870000",
    )
    receiver.transport = transport
    sink = RecordingSink()
    await transport.start(sink)
    try:
        yield fake, receiver, sink
    finally:
        await transport.close()
        receiver.stop()
        fake.stop()


async def test_signed_callbacks_with_query_strings_are_accepted(
    wired: tuple[FakeTwilio, Receiver, RecordingSink],
) -> None:
    fake, receiver, sink = wired
    assert receiver.transport is not None
    receipt = await receiver.transport.send(outgoing(sender=NUMBER))
    callbacks = fake.wait_for_callbacks(3)
    assert all("?number=%2B15559870000&message_id=msg_" in c.url for c in callbacks)
    assert [c.status for c in callbacks] == [204, 204, 204]
    assert [u.status for u in sink.updates if u.provider_id == receipt.provider_id] == ["sent", "delivered"]
    answer = await fake.ainject_inbound(HANDLE, NUMBER, "hi there", media=[("https://media.example/ME1", "image/png")])
    assert answer.status == 200 and answer.body == empty_twiml().decode()
    (inbound,) = sink.messages
    assert inbound.text == "hi there" and inbound.sender == HANDLE and inbound.to == NUMBER
    assert inbound.attachments == ({"url": "https://media.example/ME1", "name": "ME1.png"},)


async def test_unsigned_or_forged_callbacks_are_403_and_change_nothing(
    wired: tuple[FakeTwilio, Receiver, RecordingSink],
) -> None:
    fake, receiver, sink = wired
    url = f"{receiver.url}/twilio/status?number=%2B15559870000&message_id=msg_x"
    form = [("MessageSid", "SM" + "a" * 32), ("MessageStatus", "delivered"), ("AccountSid", fake.account_sid)]
    good = sign(fake.auth_token, url, form)
    tampered = [*form[:1], ("MessageStatus", "failed"), *form[2:]]
    attempts = [
        (form, None),  # no signature
        (form, sign("another-token", url, form)),  # wrong token
        (tampered, good),  # a parameter changed after signing
        (form, sign(fake.auth_token, url.replace("msg_x", "msg_y"), form)),  # signed for another URL
        (form, sign(fake.auth_token, url.split("?")[0], form)),  # signed without the query string
    ]
    async with httpx.AsyncClient() as http:
        for body, signature in attempts:
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            if signature is not None:
                headers["X-Twilio-Signature"] = signature
            r = await http.post(url, content=urlencode(body), headers=headers)
            assert r.status_code == 403
        r = await http.post(
            url.replace("/status", "/inbound"),
            content=urlencode([("From", HANDLE), ("To", NUMBER), ("Body", "STOP")]),
            headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": good},
        )
        assert r.status_code == 403
        assert sink.updates == [] and sink.messages == [] and receiver.opt_outs == {}
        r = await http.post(url, content=urlencode(form), headers={"X-Twilio-Signature": good})
        assert r.status_code == 204
    assert [(u.status, u.message_id) for u in sink.updates] == [("delivered", "msg_x")]


async def test_a_proxy_public_url_must_be_used(wired: tuple[FakeTwilio, Receiver, RecordingSink]) -> None:
    fake, receiver, sink = wired
    receiver.public_base = "https://gateway.example.com"  # what Twilio would have called through a proxy
    answer = await fake.ainject_inbound(HANDLE, NUMBER, "hello")
    assert answer.status == 403 and sink.messages == []


# -- parsers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["accepted", "scheduled", "queued", "sending", "partially_delivered", "weird", ""])
def test_statuses_that_are_not_news(status: str) -> None:
    assert parse_status_callback({"MessageSid": "SM1", "MessageStatus": status}) is None


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"MessageStatus": "sent"}, "sent", None),
        ({"MessageStatus": "delivered", "RawDlrDoneDate": "2401011230"}, "delivered", None),
        ({"SmsStatus": "delivered"}, "delivered", None),
        ({"MessageStatus": "read"}, "read", None),
        (
            {"MessageStatus": "undelivered", "ErrorCode": "30003"},
            "failed",
            "twilio_30003: Unreachable destination handset",
        ),
        ({"MessageStatus": "failed", "ErrorCode": "30001"}, "failed", "twilio_30001: Queue overflow"),
        ({"MessageStatus": "failed", "ErrorCode": "12345", "ErrorMessage": "Odd"}, "failed", "twilio_12345: Odd"),
        ({"MessageStatus": "undelivered", "ErrorCode": "39999"}, "failed", "twilio_39999"),
        ({"MessageStatus": "failed"}, "failed", "twilio_failed"),
        ({"MessageStatus": "canceled"}, "failed", "twilio_canceled"),
    ],
)
def test_status_mapping(form: dict[str, str], status: str, error: str | None) -> None:
    update = parse_status_callback({"MessageSid": "SMabc", **form}, "msg_1", at=1234)
    assert update is not None
    assert (update.status, update.error, update.at) == (status, error, 1234)
    assert (update.message_id, update.provider_id, update.protocol) == ("msg_1", "SMabc", "sms")


def test_status_without_any_id_is_ignored() -> None:
    assert parse_status_callback({"MessageStatus": "delivered"}) is None
    assert parse_status_callback({"MessageStatus": "delivered"}, "msg_1") is not None


def test_parse_inbound_sms_and_mms() -> None:
    sms = parse_inbound({**SMS_PARAMS, "NumMedia": "0"}, NUMBER, at=99)
    assert (sms.to, sms.sender, sms.text, sms.provider_id, sms.protocol) == (
        NUMBER,
        "+15551230000",
        "hello",
        "SM11111111111111111111111111111111",
        "sms",
    )
    assert sms.attachments == () and sms.received_at == 99
    mms = parse_inbound(
        [
            ("MessageSid", "MM" + "2" * 32),
            ("From", HANDLE),
            ("To", NUMBER),
            ("Body", ""),
            ("NumMedia", "2"),
            ("MediaUrl0", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM2/Media/ME1"),
            ("MediaContentType0", "image/jpeg"),
            ("MediaUrl1", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM2/Media/ME2"),
            ("MediaContentType1", "video/mp4"),
        ],
        NUMBER,
    )
    assert mms.text is None and mms.protocol == "sms"
    assert [a["name"] for a in mms.attachments] == ["ME1.jpg", "ME2.mp4"]
    assert mms.attachments[0]["url"].endswith("/Media/ME1")
    broken = parse_inbound({"From": HANDLE, "NumMedia": "x", "Body": "b"}, NUMBER)
    assert broken.attachments == () and broken.provider_id is None


@pytest.mark.parametrize("word", sorted(OPT_OUT_KEYWORDS))
def test_opt_out_keywords(word: str) -> None:
    assert opt_out_action(word) == "stop"
    assert opt_out_action(f"  {word.lower()}\n") == "stop"
    assert opt_out_action(word.title()) == "stop"


@pytest.mark.parametrize("word", sorted(OPT_IN_KEYWORDS))
def test_opt_in_keywords(word: str) -> None:
    assert opt_out_action(word) == "start"
    assert opt_out_action(f" {word.lower()} ") == "start"


@pytest.mark.parametrize("body", ["stop please", "please stop", "STOP!", "HELP", "INFO", "", None, "stopp", "opt out"])
def test_not_keywords(body: str | None) -> None:
    assert opt_out_action(body) is None


def test_keyword_table_matches_twilio_defaults() -> None:
    assert {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"} == OPT_OUT_KEYWORDS
    assert {"START", "YES", "UNSTOP"} == OPT_IN_KEYWORDS


def test_empty_twiml() -> None:
    assert empty_twiml() == b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
