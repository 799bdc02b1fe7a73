"""Twilio's callbacks reach an API-only process (``serve --no-workers``): no transport runs there, yet signed
inbound texts are stored and a status callback finds its message by the id in its URL, even one still queued
(the callback overtook the send's own answer).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select

from openbloo.config import database_urls
from openbloo.db import models as m
from openbloo.db.engine import make_sync_engine
from tests.fakes.twilio import FakeTwilio, sign
from tests.serve_process import ServeProcess
from tests.test_cli import cli_json


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as twilio:
        yield twilio


def test_callbacks_work_in_an_api_only_process(fake: FakeTwilio, tmp_path: Path, empty_database: str) -> None:
    url = empty_database
    api = ServeProcess(url, tmp_path)
    public = f"http://127.0.0.1:{api.port}"
    api.env.update({"OPENBLOO_PUBLIC_URL": public, "OPENBLOO_LOG_LEVEL": "warning"})
    api.args = ("--no-workers",)
    number = "+15555550179"
    added = cli_json(
        "numbers", "add", number, "--transport", "twilio", "--twilio-account-sid", fake.account_sid,
        "--twilio-auth-token", fake.auth_token, "--twilio-api-url", fake.url, "--database-url", url,
    )  # fmt: skip
    key = cli_json("keys", "create", "--database-url", url)["api_key"]
    fake.inbound_urls[number] = added["inbound_url"].replace("http://127.0.0.1:8600", public)
    assert added["inbound_url"].startswith("http://127.0.0.1:8600/callbacks/twilio/")  # the CLI's own default
    api.start()
    engine = make_sync_engine(database_urls(url))
    try:
        headers = {"Authorization": f"Bearer {key}"}
        inbound = fake.inject_inbound("+15551230077", number, "hello there")
        assert inbound.status == 200 and inbound.content_type.startswith("text/xml"), inbound.body
        r = httpx.get(f"{api.base_url}/chats/%2B15551230077/messages", headers=headers)
        assert [x["text"] for x in r.json()["messages"]] == ["hello there"]

        sent = httpx.post(f"{api.base_url}/chats/%2B15551230077/messages", json={"text": "hi"}, headers=headers)
        message_id = sent.json()["message_id"]
        status_url = f"{added['inbound_urls']['twilio_status'].replace('http://127.0.0.1:8600', public)}"
        status_url += f"?message_id={message_id}"
        form = [("MessageSid", "SM" + "ab" * 16), ("AccountSid", fake.account_sid), ("MessageStatus", "delivered")]
        answer = httpx.post(status_url, content=urlencode(form).encode(),
                            headers={"X-Twilio-Signature": sign(fake.auth_token, status_url, form),
                                     "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert answer.status_code == 204, answer.text
        with engine.connect() as conn:
            row = conn.execute(select(m.messages).where(m.messages.c.id == message_id)).one()
        assert (row.status, row.provider_id, row.protocol) == ("delivered", "SM" + "ab" * 16, "sms")
    finally:
        api.stop()
        engine.dispose()
    assert fake.creates() == [], "no worker ran: nothing was sent"
