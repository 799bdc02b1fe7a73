"""Webhook attempts are logged together: attempts that finish within the linger share one transaction, and
a sender that stops logs the attempts still waiting before it goes, so no receiver gets an event twice
because its attempt's log was dropped."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from openbloo.auth.context import AuthContext
from openbloo.db import models as m
from openbloo.events.sender import POSTGRES_LOG_LINGER_SECONDS, WebhookSender
from openbloo.ids import now_ms
from openbloo.runtime import Runtime
from openbloo.webhooks.service import NEVER, create_webhook
from openbloo.workers import Workers
from tests.helpers import org_context, planned_send, started_runtime, wait_until
from tests.receiver import Receiver

EVENTS_PER_MESSAGE = 4  # message.queued, .sent, .delivered, .read: the simulator delivers and reads at once


@pytest.fixture
def linger() -> float | None:
    return None  # the store's default


@pytest.fixture
async def runtime(empty_database: str, tmp_path: Path, linger: float | None) -> AsyncIterator[Runtime]:
    async with started_runtime(empty_database, tmp_path, webhook_log_linger_seconds=linger) as rt:
        yield rt


async def _subscribed_workers(rt: Runtime, receiver: Receiver) -> tuple[AuthContext, Workers]:
    ctx = org_context(rt.engine, org="attempt-log")
    await rt.writer.run(
        create_webhook(
            org_id=ctx.organization_id,
            api_key_id=ctx.key_id,
            url=receiver.url,
            webhook_type="status",
            scope="all",
            valid_until=NEVER,
            now=now_ms(),
        )
    )
    workers = Workers(rt)
    await workers.start()
    return ctx, workers


def _deliveries(rt: Runtime) -> dict[str, int]:
    d = m.webhook_deliveries
    with rt.engine.connect() as conn:
        return {state: n for state, n in conn.execute(select(d.c.state, func.count()).group_by(d.c.state))}


def _attempts(rt: Runtime) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(m.webhook_attempts)).scalar_one())


@pytest.mark.parametrize("linger", [30.0])
async def test_a_stopping_sender_logs_the_attempts_that_wait_for_their_linger(
    runtime: Runtime, receiver: Receiver
) -> None:
    """With a linger of 30 s, the attempts of a message are still waiting to be logged when the workers
    stop: they are logged then (their deliveries end succeeded), not left leased to be sent again."""
    ctx, workers = await _subscribed_workers(runtime, receiver)
    try:
        await runtime.writer.run(planned_send(ctx, "+15550301234", "hello", on_committed=runtime.notify_jobs))
        await wait_until(lambda: len(receiver.events()) >= EVENTS_PER_MESSAGE)
        assert _attempts(runtime) == 0, "logged before the linger ended"
    finally:
        started = time.monotonic()
        await workers.stop()
    assert time.monotonic() - started < 3, "the stop waited for the linger"
    assert _deliveries(runtime) == {"succeeded": EVENTS_PER_MESSAGE}
    assert _attempts(runtime) == EVENTS_PER_MESSAGE


@pytest.mark.parametrize("linger", [0.5])
async def test_attempts_finishing_together_are_logged_in_few_transactions(
    runtime: Runtime, receiver: Receiver, linger: float
) -> None:
    """On PostgreSQL a row's ``xmin`` names the transaction that wrote it: the attempts of eight sends made
    one after another, finished within the linger of each other, share a few transactions, not one each."""
    if runtime.urls.dialect != "postgresql":
        pytest.skip("transaction ids of rows are PostgreSQL's")
    ctx, workers = await _subscribed_workers(runtime, receiver)
    sends = 8
    try:
        for i in range(sends):  # one after another, each committed before the next: their events trickle in
            await runtime.writer.run(planned_send(ctx, f"+1555031{i:04d}", f"m{i}", on_committed=runtime.notify_jobs))
        expected = sends * EVENTS_PER_MESSAGE
        await wait_until(lambda: _deliveries(runtime).get("succeeded") == expected)
    finally:
        await workers.stop()
    with runtime.engine.connect() as conn:
        attempts, transactions = conn.execute(
            text("SELECT count(*), count(DISTINCT xmin::text) FROM webhook_attempts")
        ).one()
    assert attempts == expected
    assert transactions <= expected // 4, f"{attempts} attempts logged in {transactions} transactions"


async def test_the_log_lingers_on_postgresql_and_not_on_sqlite_unless_told(runtime: Runtime) -> None:
    """A transaction on PostgreSQL costs round trips, which the linger shares out; on SQLite it costs none,
    and a bigger one only holds the file's write lock longer."""
    expected = POSTGRES_LOG_LINGER_SECONDS if runtime.urls.dialect == "postgresql" else 0.0
    assert WebhookSender(runtime).log_linger == expected
