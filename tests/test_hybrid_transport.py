"""HybridTransport against the fake Mac and the fake Twilio (real HTTP, no database): after a restart, the
crash search asks the side that may have the message, and never takes a failed iMessage for a sent one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

import pytest

from openbloo.config import Settings
from openbloo.transports.base import Outgoing, TransientError
from openbloo.transports.hybrid import HybridTransport
from openbloo.transports.registry import NumberDevice
from tests.fakes.bluebubbles import FakeBlueBubbles
from tests.fakes.twilio import FakeTwilio
from tests.twilio_support import FROM, outgoing, sms_handle


@dataclass
class Env:
    mac: FakeBlueBubbles
    twilio: FakeTwilio
    make: Callable[[], HybridTransport]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    mac = FakeBlueBubbles(delivery_ms=None).start()
    twilio = FakeTwilio(step_delay=5).start()
    made: list[HybridTransport] = []
    config = {
        "bluebubbles": {"url": mac.url, "password": mac.password},
        "twilio": {"account_sid": twilio.account_sid, "auth_token": twilio.auth_token, "api_url": twilio.url},
    }
    device = NumberDevice("alloc_h", "org_h", FROM, "hybrid", config, "token", "http://127.0.0.1:9")

    def make() -> HybridTransport:
        transport = HybridTransport.from_device(device, Settings())
        made.append(transport)
        return transport

    try:
        yield Env(mac, twilio, make)
    finally:
        for transport in made:
            await transport.close()
        mac.stop()
        twilio.stop()


def _again(message: Outgoing) -> Outgoing:
    """The same job, as the dispatcher hands it over after a restart (its last attempt's outcome unknown)."""
    return replace(message, attempt=message.attempt + 1, in_flight_since=message.time_accepted)


async def test_after_a_restart_each_message_is_found_where_it_went(env: Env) -> None:
    before = env.make()
    blue, green, bounced, never = sms_handle(), sms_handle(), sms_handle(), sms_handle()
    env.mac.sms_only.add(green)
    env.mac.bad_addresses.add(bounced)
    by_imessage, by_sms, by_fallback = outgoing("blue", blue), outgoing("green", green), outgoing("bounce", bounced)
    receipts = [await before.send(m) for m in (by_imessage, by_sms, by_fallback)]
    assert [r.protocol for r in receipts] == ["imessage", "sms", "sms"]
    assert len(env.twilio.creates()) == 2

    after = env.make()  # a new process: it does not know which way each message went
    found = [await after.find_sent(_again(m)) for m in (by_imessage, by_sms, by_fallback)]
    assert [f.provider_id if f else None for f in found] == [r.provider_id for r in receipts]
    assert await after.find_sent(_again(outgoing("never sent", never))) is None

    env.mac.go_offline()
    sms_only = env.make()
    found_sms = await sms_only.find_sent(_again(by_sms))
    assert found_sms is not None and found_sms.provider_id == receipts[1].provider_id  # Twilio answers alone
    with pytest.raises(TransientError):
        await sms_only.find_sent(_again(by_imessage))  # only the Mac can tell: ask again later
    assert len(env.twilio.creates()) == 2, "searching sends nothing"


async def test_email_and_groups_go_by_imessage_without_asking(env: Env) -> None:
    hybrid = env.make()
    receipt = await hybrid.send(outgoing("hi", "someone@example.com"))
    assert receipt.protocol == "imessage"
    assert env.mac.calls("/handle/availability/imessage", "GET") == []
    assert env.twilio.creates() == []
