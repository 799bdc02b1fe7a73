"""The Twilio REST client against the fake over loopback HTTP: the wire format, paging, and error mapping."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator

import pytest

from openbloo.transports.base import PermanentError, TransientError
from openbloo.transports.twilio.client import TwilioClient, mask_secret
from tests.conftest import free_port
from tests.fakes.twilio import FakeTwilio

TO = "+15551234567"
FROM = "+15557650000"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(step_delay=0.01) as f:
        yield f


def client_for(fake: FakeTwilio, **kwargs: object) -> TwilioClient:
    return TwilioClient(fake.account_sid, fake.auth_token, api_url=fake.url, **kwargs)  # type: ignore[arg-type]


async def test_create_sends_twilio_wire_format(fake: FakeTwilio) -> None:
    client = client_for(fake)
    try:
        resource = await client.create_message(
            to=TO,
            from_=FROM,
            body="Hello! 👍",
            media_urls=["https://example.com/a.jpg", "https://example.com/b.png"],
            status_callback="https://hooks.example.com/twilio/status?message_id=msg_abc",
        )
    finally:
        await client.aclose()
    assert resource["sid"].startswith("MM") and len(resource["sid"]) == 34
    assert resource["status"] == "queued" and resource["num_media"] == "2"
    (rec,) = fake.creates()
    assert rec.path == f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    assert rec.headers["content-type"] == "application/x-www-form-urlencoded"
    assert rec.headers["accept"] == "application/json"
    assert rec.auth == (fake.account_sid, fake.auth_token)
    expected = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    assert rec.headers["authorization"] == f"Basic {expected}"
    assert rec.field("To") == [TO] and rec.field("From") == [FROM] and rec.field("Body") == ["Hello! 👍"]
    assert rec.field("MediaUrl") == ["https://example.com/a.jpg", "https://example.com/b.png"]
    assert rec.field("StatusCallback") == ["https://hooks.example.com/twilio/status?message_id=msg_abc"]


async def test_media_only_message_has_no_body_field(fake: FakeTwilio) -> None:
    client = client_for(fake)
    try:
        await client.create_message(to=TO, from_=FROM, media_urls=["https://example.com/a.jpg"])
    finally:
        await client.aclose()
    (rec,) = fake.creates()
    assert rec.field("Body") == [] and rec.field("StatusCallback") == []


async def test_fetch_and_list_with_paging(fake: FakeTwilio) -> None:
    client = client_for(fake)
    try:
        sids = [(await client.create_message(to=TO, from_=FROM, body=f"m{i}"))["sid"] for i in range(5)]
        await client.create_message(to="+15550001111", from_=FROM, body="other")
        for sid in sids:
            fake.wait_for_status(sid, "delivered")
        fetched = await client.fetch_message(sids[0])
        assert fetched["sid"] == sids[0] and fetched["status"] == "delivered" and fetched["date_sent"]
        listed = [m["sid"] async for m in client.list_messages(to=TO, from_=FROM, page_size=2)]
        assert listed == list(reversed(sids))  # newest first, across three pages
        pages = [r for r in fake.requests if r.method == "GET" and r.path.endswith("/Messages.json")]
        assert len(pages) == 3
        assert ("DateSent>", "2020-01-01") not in pages[0].query
        dated = [m["sid"] async for m in client.list_messages(to=TO, date_sent_on_or_after="2020-01-01")]
        assert dated == list(reversed(sids))
        assert ("DateSent>", "2020-01-01") in fake.requests[-1].query
        assert [m async for m in client.list_messages(to=TO, date_sent_on_or_after="2999-01-01")] == []
        with pytest.raises(PermanentError) as exc:
            await client.fetch_message("SM" + "f" * 32)
        assert exc.value.code == "twilio_20404"
    finally:
        await client.aclose()


async def test_account_fetch(fake: FakeTwilio) -> None:
    client = client_for(fake)
    try:
        account = await client.fetch_account()
        number = await client.find_incoming_number(FROM)
    finally:
        await client.aclose()
    assert account["status"] == "active" and account["sid"] == fake.account_sid
    assert number is not None and number["capabilities"]["sms"] is True


@pytest.mark.parametrize(
    ("to", "code"),
    [("5551234567", "twilio_21211"), ("+15005550001", "twilio_21211"), ("+15005550004", "twilio_21610")],
)
async def test_validation_errors_are_permanent(fake: FakeTwilio, to: str, code: str) -> None:
    client = client_for(fake)
    try:
        with pytest.raises(PermanentError) as exc:
            await client.create_message(to=to, from_=FROM, body="x")
    finally:
        await client.aclose()
    assert exc.value.code == code and not isinstance(exc.value, TransientError)
    assert "HTTP 400" in str(exc.value)


async def test_missing_body_is_21602(fake: FakeTwilio) -> None:
    client = client_for(fake)
    try:
        with pytest.raises(PermanentError) as exc:
            await client.create_message(to=TO, from_=FROM)
    finally:
        await client.aclose()
    assert exc.value.code == "twilio_21602"


async def test_rate_limit_is_transient_with_retry_after(fake: FakeTwilio) -> None:
    fake.fail_next(2, status=429, retry_after=3)
    client = client_for(fake)
    try:
        for _ in range(2):
            with pytest.raises(TransientError) as exc:
                await client.create_message(to=TO, from_=FROM, body="x")
            assert exc.value.code == "twilio_20429" and exc.value.retry_after == 3.0
        assert (await client.create_message(to=TO, from_=FROM, body="x"))["status"] == "queued"
    finally:
        await client.aclose()


async def test_rate_limit_without_retry_after_leaves_backoff_to_the_dispatcher(fake: FakeTwilio) -> None:
    fake.fail_next(1, status=429)
    client = client_for(fake)
    try:
        with pytest.raises(TransientError) as exc:
            await client.create_message(to=TO, from_=FROM, body="x")
    finally:
        await client.aclose()
    assert exc.value.code == "twilio_20429" and exc.value.retry_after is None


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_transient(fake: FakeTwilio, status: int) -> None:
    fake.fail_next(1, status=status)
    client = client_for(fake)
    try:
        with pytest.raises(TransientError) as exc:
            await client.create_message(to=TO, from_=FROM, body="x")
    finally:
        await client.aclose()
    assert exc.value.code == "twilio_20500"
    assert getattr(exc.value, "maybe_sent", False) is True


async def test_non_json_bad_gateway_is_transient(fake: FakeTwilio) -> None:
    fake.lose_next_answers(1)
    client = client_for(fake)
    try:
        with pytest.raises(TransientError) as exc:
            await client.create_message(to=TO, from_=FROM, body="x")
    finally:
        await client.aclose()
    assert exc.value.code == "twilio_http_502"


async def test_bad_credentials_wait_for_the_operator(fake: FakeTwilio) -> None:
    client = TwilioClient(fake.account_sid, "wrong-token-123456", api_url=fake.url)
    try:
        with pytest.raises(TransientError) as exc:
            await client.create_message(to=TO, from_=FROM, body="x")
    finally:
        await client.aclose()
    assert exc.value.code == "twilio_20003"
    assert "wrong-token-123456" not in str(exc.value)


async def test_connection_refused_is_transient() -> None:
    client = TwilioClient("AC" + "1" * 32, "secret-token-abcdef", api_url=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(TransientError) as exc:
            await client.create_message(to=TO, from_=FROM, body="x")
    finally:
        await client.aclose()
    assert exc.value.code == "twilio_unreachable"
    assert getattr(exc.value, "maybe_sent", True) is False
    assert "secret-token-abcdef" not in str(exc.value)


async def test_timeout_is_transient_and_maybe_sent() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        client = TwilioClient("AC" + "1" * 32, "secret-token-abcdef", api_url=f"http://127.0.0.1:{port}", timeout=0.3)
        try:
            with pytest.raises(TransientError) as exc:
                await client.create_message(to=TO, from_=FROM, body="x")
        finally:
            await client.aclose()
    assert exc.value.code == "twilio_timeout"
    assert getattr(exc.value, "maybe_sent", False) is True


def test_repr_and_mask_never_show_the_token() -> None:
    client = TwilioClient("AC" + "1" * 32, "0123456789abcdef0123456789abcdef")
    assert "0123456789abcdef0123456789abcdef" not in repr(client)
    assert repr(client).count("cdef") == 1
    assert mask_secret("0123456789abcdef0123456789abcdef") == "…cdef"
    assert mask_secret("short") == "…" and mask_secret("") == "(none)"
    assert client.api_url == "https://api.twilio.com"
