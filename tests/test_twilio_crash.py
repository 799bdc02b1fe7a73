"""Exactly once across a crash, on Twilio: ``openbloo serve`` is killed with SIGKILL after Twilio created the
message but before openbloo recorded it; after the restart the dispatcher finds it in Twilio's message list
(To, From, date, body) and does not send it again.
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
from tests.fakes.twilio import FakeTwilio
from tests.helpers import wait_for
from tests.serve_process import ServeProcess
from tests.test_cli import cli, cli_json


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    twilio = FakeTwilio(step_delay=60).start()  # no status callback tells openbloo anything meanwhile
    try:
        yield twilio
    finally:
        twilio.stop()


@pytest.mark.slow
def test_sigkill_between_twilios_acceptance_and_our_record_sends_nothing_twice(
    fake: FakeTwilio, tmp_path: Path, empty_database: str
) -> None:
    url = empty_database
    port_holder = ServeProcess(url, tmp_path)
    env = {
        "OPENBLOO_PUBLIC_URL": f"http://127.0.0.1:{port_holder.port}",
        "OPENBLOO_DELIVERY_LEASE_SECONDS": "1",
        "OPENBLOO_REGISTRY_REFRESH_SECONDS": "0.2",
        "OPENBLOO_DEVICE_CHECK_INTERVAL": "0.3",
        "OPENBLOO_LOG_LEVEL": "warning",
    }
    number = "+15555550178"
    cli("numbers", "add", number, "--transport", "twilio", "--twilio-account-sid", fake.account_sid,
        "--twilio-auth-token", fake.auth_token, "--twilio-api-url", fake.url, "--database-url", url)  # fmt: skip
    key = cli_json("keys", "create", "--database-url", url)["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    first = ServeProcess(url, tmp_path, env)
    first.port = port_holder.port
    first.start()
    fake.answer_delay = 30.0  # Twilio holds its answer: openbloo never learns the outcome
    try:
        r = httpx.post(f"{first.base_url}/chats/%2B15552228888/messages", json={"text": "only once"}, headers=headers)
        assert r.status_code == 202, r.text
        message_id = r.json()["message_id"]
        wait_for(lambda: fake.messages, timeout=20, what="Twilio to create the message")
        first.kill9()
    finally:
        first.stop()
    fake.answer_delay = 0.0
    [sid] = fake.messages
    engine = make_sync_engine(database_urls(url))
    try:
        with engine.connect() as conn:
            status = conn.execute(select(m.messages.c.status).where(m.messages.c.id == message_id)).scalar_one()
        assert status == "queued", "openbloo had not recorded the send when it died"
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

            assert wait_for(recorded, timeout=30, what="the restarted server to find the message at Twilio") == sid
            time.sleep(1.0)  # time for a wrong second send to happen, if it were going to
        finally:
            second.stop()
    finally:
        engine.dispose()
    assert len(fake.creates()) == 1, "Twilio received the message more than once"
    lists = [r for r in fake.requests if r.method == "GET" and r.path.endswith("/Messages.json")]
    assert lists and all(("To", "+15552228888") in r.query and ("From", number) in r.query for r in lists)


@pytest.mark.slow
def test_a_delivery_callback_lost_while_down_is_caught_up_after_the_restart(
    tmp_path: Path, empty_database: str
) -> None:
    """Twilio posts each status callback once: one that finds openbloo down is gone, so the restarted
    dispatcher fetches the messages it left ``sent`` and records what became of them."""
    url = empty_database
    fake = FakeTwilio(step_delay=1.0).start()
    port_holder = ServeProcess(url, tmp_path)
    env = {
        "OPENBLOO_PUBLIC_URL": f"http://127.0.0.1:{port_holder.port}",
        "OPENBLOO_REGISTRY_REFRESH_SECONDS": "0.2",
        "OPENBLOO_LOG_LEVEL": "warning",
    }
    number = "+15555550179"
    cli("numbers", "add", number, "--transport", "twilio", "--twilio-account-sid", fake.account_sid,
        "--twilio-auth-token", fake.auth_token, "--twilio-api-url", fake.url, "--database-url", url)  # fmt: skip
    key = cli_json("keys", "create", "--database-url", url)["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    engine = make_sync_engine(database_urls(url))

    def status_of(message_id: str) -> str:
        with engine.connect() as conn:
            return str(conn.execute(select(m.messages.c.status).where(m.messages.c.id == message_id)).scalar_one())

    try:
        first = ServeProcess(url, tmp_path, env)
        first.port = port_holder.port
        first.start()
        try:
            r = httpx.post(
                f"{first.base_url}/chats/%2B15552227777/messages", json={"text": "late news"}, headers=headers
            )
            assert r.status_code == 202, r.text
            message_id = r.json()["message_id"]
            wait_for(lambda: status_of(message_id) == "sent", timeout=20, what="the send to be recorded")
            first.kill9()
        finally:
            first.stop()
        [sid] = fake.messages
        fake.wait_for_status(sid, "delivered", timeout=10)  # its callback found nobody listening
        assert status_of(message_id) == "sent"
        second = ServeProcess(url, tmp_path, env)
        second.port = port_holder.port
        second.start()
        try:
            wait_for(lambda: status_of(message_id) == "delivered", timeout=30, what="the restart to catch up")
        finally:
            second.stop()
        assert len(fake.creates()) == 1
    finally:
        engine.dispose()
        fake.stop()
