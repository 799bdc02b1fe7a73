"""A conversation learns which of the device's chats it is, from a send's receipt and from an inbound message,
and one worker batch can hold both kinds of news.

Both paths queue their UPDATE for the flush under a pending key. They once used one key for two different
statements (different parameter names), so a batch holding both failed at its flush and was re-run unit by
unit; the batch now refuses a second statement under a key at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from openbloo.addressing import normalize_handle
from openbloo.chats import store
from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.db.writer import run_units
from openbloo.delivery import jobs
from openbloo.delivery.claims import claim
from openbloo.messages.inbound import record_inbound
from openbloo.transports.base import InboundMessage, Receipt
from tests.helpers import migrated_engine, org_context, planned_send

NUMBER = "+15550004444"
NOW = 10**13


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with migrated_engine(f"sqlite:///{tmp_path / 'device-chats.db'}") as eng:
        yield eng


def _device_chats(engine: Engine) -> dict[str, str | None]:
    """Chat key → its conversation's device chat."""
    c, conv = m.chats, m.conversations
    with engine.connect() as conn:
        rows = conn.execute(select(c.c.chat_key, conv.c.device_chat_guid).join(conv, conv.c.chat_id == c.c.id))
        return {key: guid for key, guid in rows}


def test_a_receipt_and_an_inbound_message_teach_device_chats_in_one_batch(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = org_context(engine, "devchats", NUMBER)
    sent_to, heard_from = "+15550604001", "+15550604002"
    [(ok, outcome)] = run_units(engine, [planned_send(ctx, sent_to, "hello")])
    assert ok, outcome
    message_id = json.loads(outcome.body)["message_id"]
    [(ok, claimed)] = run_units(engine, [claim("test-device-chats", NOW, 60_000, 16)])
    assert ok, claimed
    [job] = [job for conv in claimed for job in conv.jobs]
    assert job.outgoing.message_id == message_id

    receipt = Receipt("provider-1", "imessage", NOW, chat_guid=f"iMessage;-;{sent_to}")
    heard = InboundMessage(
        to=NUMBER,
        sender=heard_from,
        received_at=NOW,
        text="hi",
        provider_id="p-in-1",
        device_chat=f"SMS;-;{heard_from}",
    )
    with caplog.at_level(logging.WARNING):
        results = run_units(engine, [jobs.record_sent(job, receipt, NOW), record_inbound(heard)])
    assert [ok for ok, _ in results] == [True, True], results
    assert not [r for r in caplog.records if "one by one" in r.getMessage()], "the batch failed and was re-run"
    assert _device_chats(engine) == {sent_to: f"iMessage;-;{sent_to}", heard_from: f"SMS;-;{heard_from}"}


def test_a_group_keeps_the_first_device_chat_it_learns(engine: Engine) -> None:
    """A send's receipt (the worker) and a received message (inbound) both call ``store.learn_group_chat``:
    one statement under one key, so one batch can hold several, and the first chat a group learns stays."""
    ctx = org_context(engine, "groupchats", NUMBER)
    number_id = ctx.pool[0].id
    handles = [(normalize_handle("+15550604101"), normalize_handle(f"+1555060410{i}")) for i in (2, 3, 4)]

    def make_groups(batch: Batch) -> list[str]:
        return [store.create_unnamed_group(batch, ctx.organization_id, number_id, h, NOW).id for h in handles]

    [(ok, groups)] = run_units(engine, [make_groups])
    assert ok, groups
    first, second, linked = groups
    [(ok, _)] = run_units(engine, [lambda batch: store.learn_group_chat(batch, linked, "iMessage;+;chat-linked")])
    assert ok

    def learn(batch: Batch) -> None:
        store.learn_group_chat(batch, first, "iMessage;+;chat-first")
        store.learn_group_chat(batch, second, "iMessage;+;chat-second")
        store.learn_group_chat(batch, first, "iMessage;+;chat-later")  # a second chat for one group: kept out
        store.learn_group_chat(batch, linked, "iMessage;+;chat-other")

    [(ok, error)] = run_units(engine, [learn])
    assert ok, error
    with engine.connect() as conn:
        chats = {gid: guid for gid, guid in conn.execute(select(m.groups.c.id, m.groups.c.chat_guid))}
    assert chats == {
        first: "iMessage;+;chat-first",
        second: "iMessage;+;chat-second",
        linked: "iMessage;+;chat-linked",
    }


def test_a_pending_key_holds_one_statement(engine: Engine) -> None:
    first = update(m.conversations).values(device_chat_guid=None)
    second = update(m.chats).values(last_message_text=None)
    with engine.connect() as conn:
        batch = Batch(conn)
        batch.execute_later("key", first, {})
        batch.execute_later("key", first, {})  # the same statement again: one more parameter set
        with pytest.raises(ValueError, match="another statement"):
            batch.execute_later("key", second, {})
