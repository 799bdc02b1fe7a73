"""kill -9 under load: every accepted (202) message still reaches a final state, and none is sent twice."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from openbloo.config import database_urls
from openbloo.db import models as m
from openbloo.transports.simulator import read_log
from tests.helpers import wait_for
from tests.serve_process import ServeProcess

FINAL = {"delivered", "failed"}


async def _fire(base_url: str, key: str, total: int, accepted: list[str], stop: threading.Event) -> None:
    """Send ``total`` messages to 100 chats over 32 connections; keep the ids that got a 202."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
            while not stop.is_set():
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                chat = f"%2B155523{i % 100:05d}"
                try:
                    r = await http.post(f"/chats/{chat}/messages", json={"text": f"crash test {i}"})
                except httpx.HTTPError:
                    continue  # the server died under this request: no 202, no promise
                if r.status_code == 202:
                    accepted.append(r.json()["message_id"])

    await asyncio.gather(*(worker() for _ in range(32)))


@pytest.mark.slow
def test_kill9_while_sends_are_in_flight_loses_and_duplicates_nothing(empty_database: str, tmp_path: Path) -> None:
    url = empty_database
    sim = tmp_path / "sim.db"
    env = {
        "OPENBLOO_SIMULATOR_STATE": str(sim),
        "OPENBLOO_SIMULATOR_DELIVERY_MS": "0",
        "OPENBLOO_SIMULATOR_READ_MS": "0",
        "OPENBLOO_DELIVERY_LEASE_SECONDS": "2",
        "OPENBLOO_DELIVERY_RETRY_BASE": "0.05",
        "OPENBLOO_LOG_LEVEL": "warning",
    }
    first = ServeProcess(url, tmp_path, env).start()
    assert first.api_key
    accepted: list[str] = []
    stop = threading.Event()
    sender = threading.Thread(
        target=lambda: asyncio.run(_fire(first.base_url, first.api_key or "", 1000, accepted, stop))
    )
    try:
        sender.start()
        wait_for(lambda: len(accepted) >= 300, timeout=60, interval=0.005, what="300 accepted sends")
        first.kill9()
        stop.set()
        sender.join(30)
    finally:
        first.stop()
    killed_at = len(accepted)
    assert 300 <= killed_at < 1000

    second = ServeProcess(url, tmp_path, env).start()
    try:
        # The rest of the load goes to the restarted server with a fresh key.
        from openbloo.auth.keys import create_key
        from openbloo.db.engine import make_sync_engine
        from openbloo.db.writer import run_unit

        engine = make_sync_engine(database_urls(url))
        key = run_unit(engine, create_key("default", "after-crash")).api_key
        asyncio.run(_fire(second.base_url, key, 200, accepted, threading.Event()))

        ids = set(accepted)

        def all_final() -> bool:
            with engine.connect() as conn:
                rows = conn.execute(select(m.messages.c.id, m.messages.c.status).where(m.messages.c.id.in_(ids)))
                statuses = {r.id: r.status for r in rows}
            return len(statuses) == len(ids) and all(s in FINAL for s in statuses.values())

        wait_for(all_final, timeout=90, interval=0.25, what="every accepted message to reach a final state")
        sent = Counter(e["message_id"] for e in read_log(sim) if e["outcome"] == "sent")
        duplicated = [mid for mid, n in sent.items() if n > 1]
        assert duplicated == []
        assert ids <= set(sent)
        engine.dispose()
    finally:
        second.stop()
