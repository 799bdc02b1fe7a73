"""Exactly once across a crash: ``openbloo serve`` is killed with SIGKILL after the Mac accepted a send but
before openbloo recorded it; after the restart the message is found on the Mac, not sent again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from openbloo.config import database_urls
from openbloo.db import models as m
from openbloo.db.engine import make_sync_engine
from tests.fakes.bluebubbles import FakeBlueBubbles
from tests.helpers import wait_for
from tests.serve_process import ServeProcess
from tests.test_cli import cli, cli_json


@pytest.fixture
def fake() -> Iterator[FakeBlueBubbles]:
    device = FakeBlueBubbles(delivery_ms=None).start()
    try:
        yield device
    finally:
        device.stop()


@pytest.mark.slow
def test_sigkill_between_the_macs_acceptance_and_our_record_sends_nothing_twice(
    fake: FakeBlueBubbles, tmp_path: Path, empty_database: str
) -> None:
    url = empty_database
    port_holder = ServeProcess(url, tmp_path)  # picks the port the callback URL must name
    env = {
        "OPENBLOO_PUBLIC_URL": f"http://127.0.0.1:{port_holder.port}",
        "OPENBLOO_DELIVERY_LEASE_SECONDS": "1",
        "OPENBLOO_REGISTRY_REFRESH_SECONDS": "0.2",
        "OPENBLOO_DEVICE_CHECK_INTERVAL": "0.3",
        "OPENBLOO_RECONCILE_INTERVAL": "60",  # the dispatcher's own search must do it, not the reconciler
        "OPENBLOO_LOG_LEVEL": "warning",
    }
    number = "+15555550177"
    cli("numbers", "add", number, "--transport", "bluebubbles", "--bluebubbles-url", fake.url,
        "--bluebubbles-password", fake.password, "--database-url", url)  # fmt: skip
    key = cli_json("keys", "create", "--database-url", url)["api_key"]
    first = ServeProcess(url, tmp_path, env)
    first.port = port_holder.port
    first.start()
    headers = {"Authorization": f"Bearer {key}"}
    to = "+15552229999"
    fake.inject_inbound(to, "hello")  # the chat exists on the Mac
    wait_for(lambda: fake.webhooks, what="the webhook registration")
    fake.answer_delay = 30.0  # the Mac holds its answer: openbloo never learns the outcome
    fake.lose_webhooks(10)  # and no webhook tells it either
    try:
        r = httpx.post(f"{first.base_url}/chats/%2B15552229999/messages", json={"text": "only once"}, headers=headers)
        assert r.status_code == 202, r.text
        message_id = r.json()["message_id"]
        wait_for(lambda: [x for x in fake.messages_from_me() if x.text == "only once"], what="the Mac to accept it")
        first.kill9()
    finally:
        first.stop()
    engine = make_sync_engine(database_urls(url))
    try:
        with engine.connect() as conn:
            status = conn.execute(select(m.messages.c.status).where(m.messages.c.id == message_id)).scalar_one()
        assert status == "queued", "openbloo had not recorded the send when it died"
        fake.answer_delay = 0.0  # the Mac finishes that send and forgets its tempGuid, as the real one does
        wait_for(lambda: not fake._send_cache, what="the held send to finish")
        second = ServeProcess(url, tmp_path, env)
        second.port = port_holder.port
        second.start()
        try:

            def recorded() -> str | None:
                with engine.connect() as conn:
                    row = conn.execute(
                        select(m.messages.c.status, m.messages.c.provider_id).where(m.messages.c.id == message_id)
                    ).one()
                return row.provider_id if row.status == "sent" else None

            guid = wait_for(recorded, timeout=30, what="the restarted server to find the message on the Mac")
            time.sleep(1.0)  # time for a wrong second send to happen, if it were going to
        finally:
            second.stop()
    finally:
        engine.dispose()
    sends = [c for c in fake.calls("/message/text") if c.json.get("message") == "only once"]
    assert len(sends) == 1, f"the Mac received the message {len(sends)} times"
    assert [x.guid for x in fake.messages_from_me() if x.text == "only once"] == [guid]
    assert fake.calls("/message/query"), "found by searching the chat on the Mac"
