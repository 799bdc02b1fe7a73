"""The dispatcher claims again after a conversation only when it may have more due jobs, and nothing waits
for the poll: with a poll of a minute, every job below is sent within seconds or the test fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from openbloo.db import models as m
from openbloo.runtime import Runtime
from openbloo.workers import Workers
from tests.helpers import org_context, planned_send, started_runtime

FINAL = ("delivered", "read", "failed")


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with started_runtime(
        f"sqlite:///{tmp_path / 'wakeups.db'}",
        tmp_path,
        dispatcher_poll_seconds=60.0,  # a job left for the poll misses every deadline below
        dispatcher_concurrency=8,  # claims of 8 conversations, looking at their 32 oldest due jobs
    ) as rt:
        yield rt


async def _all_final(rt: Runtime, count: int, timeout: float) -> float:
    """Seconds until ``count`` messages are final (fails past ``timeout``)."""
    started = time.monotonic()
    final = select(func.count()).select_from(m.messages).where(m.messages.c.status.in_(FINAL))
    while True:
        with rt.engine.connect() as conn:
            done = conn.execute(final).scalar_one()
        elapsed = time.monotonic() - started
        if done >= count:
            return elapsed
        assert elapsed < timeout, f"{done} of {count} final after {elapsed:.1f} s: a job waited for the poll"
        await asyncio.sleep(0.05)


async def test_a_conversation_longer_than_one_claim_is_claimed_again_at_once(runtime: Runtime) -> None:
    """A claim takes at most 100 jobs of a conversation; the rest go as soon as those are sent."""
    ctx = org_context(runtime.engine)
    for i in range(150):  # queued before any worker runs: no wake-up will ever name the last 50
        await runtime.writer.run(planned_send(ctx, "+15550201111", f"m{i}", on_committed=runtime.notify_jobs))
    workers = Workers(runtime)
    await workers.start()
    try:
        await _all_final(runtime, 150, timeout=20)
    finally:
        await workers.stop()


async def test_jobs_queued_while_their_conversation_is_held_are_sent_without_the_poll(runtime: Runtime) -> None:
    """A send arrives while the dispatcher holds its conversation (sending the 30 before it): the claim it
    wakes passes the conversation over, so the dispatcher claims again when it lets the conversation go."""
    ctx = org_context(runtime.engine)
    workers = Workers(runtime)
    await workers.start()
    try:
        for round_ in range(3):
            to = f"+155502{round_:05d}"
            sends = [planned_send(ctx, to, f"m{i}", on_committed=runtime.notify_jobs) for i in range(30)]
            await asyncio.gather(*(runtime.writer.run(send) for send in sends))
            await asyncio.sleep(0.01)  # the 30 are claimed and going out one after another
            await runtime.writer.run(planned_send(ctx, to, "late", on_committed=runtime.notify_jobs))
            await _all_final(runtime, 31 * (round_ + 1), timeout=10)
    finally:
        await workers.stop()


async def test_a_conversation_filling_a_claims_look_does_not_hide_the_others(runtime: Runtime) -> None:
    """40 due jobs of one chat are the oldest: a claim's look at the 32 oldest due jobs leases that chat
    alone. The dispatcher claims again at once and finds the next chat, long before the first is done."""
    ctx = org_context(runtime.engine)
    for i in range(40):
        await runtime.writer.run(planned_send(ctx, "+15550203333", f"m{i}", on_committed=runtime.notify_jobs))
    await runtime.writer.run(planned_send(ctx, "+15550204444", "the other chat", on_committed=runtime.notify_jobs))
    workers = Workers(runtime)
    await workers.start()
    try:
        other = select(m.messages.c.status).where(m.messages.c.text == "the other chat")
        first_chat_final = select(func.count()).where(m.messages.c.text.like("m%"), m.messages.c.status.in_(FINAL))
        started = time.monotonic()
        while True:
            with runtime.engine.connect() as conn:
                if conn.execute(other).scalar_one() in FINAL:
                    done_before = conn.execute(first_chat_final).scalar_one()
                    break
            assert time.monotonic() - started < 10, "the other chat waited for the poll"
            await asyncio.sleep(0.01)
        assert done_before < 40, "the other chat waited for the first chat's 40 jobs"
        await _all_final(runtime, 41, timeout=20)
    finally:
        await workers.stop()
