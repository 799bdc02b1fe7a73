"""Per-conversation order with competing workers, parallel conversations, and no duplicate sends."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from openbloo.runtime import Runtime
from openbloo.transports.simulator import read_log
from openbloo.workers import Workers
from tests.conftest import Server, Tenant, server_settings
from tests.helpers import path_id, wait_for


@contextmanager
def extra_workers(server: Server, simulator_state: str, count: int) -> Iterator[None]:
    """``count`` more worker processes' worth of dispatchers (own engines, writer, loop) on the same database."""
    stops: list[tuple[asyncio.AbstractEventLoop, asyncio.Event, threading.Thread]] = []
    for _ in range(count):
        ready = threading.Event()
        holder: dict[str, object] = {}

        def run(ready: threading.Event = ready, holder: dict[str, object] = holder) -> None:
            async def main() -> None:
                runtime = Runtime.create(
                    server_settings(server.database_url, simulator_state=simulator_state), migrate=False
                )
                runtime.start()
                workers = Workers(runtime)
                await workers.start()
                stop = asyncio.Event()
                holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
                ready.set()
                await stop.wait()
                await workers.stop()
                await runtime.close()

            asyncio.run(main())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert ready.wait(20), "extra worker did not start"
        stops.append((holder["loop"], holder["stop"], thread))  # type: ignore[arg-type]
    try:
        yield
    finally:
        for loop, stop, thread in stops:
            loop.call_soon_threadsafe(stop.set)
            thread.join(20)


def _send_all(tenant: Tenant, jobs: list[tuple[str, str]], parallel: int) -> list[tuple[str, str]]:
    """Send (chat, text) pairs; sends to one chat go one after another, chats in parallel."""
    by_chat: dict[str, list[str]] = {}
    for chat, text in jobs:
        by_chat.setdefault(chat, []).append(text)

    def run_chat(chat: str) -> list[tuple[str, str]]:
        out = []
        with httpx.Client(base_url=tenant.server.base_url, headers=tenant.headers(), timeout=30) as http:
            for text in by_chat[chat]:
                r = http.post(f"/chats/{path_id(chat)}/messages", json={"text": text})
                assert r.status_code == 202, r.text
                out.append((chat, r.json()["message_id"]))
        return out

    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(run_chat, by_chat))
    return [pair for chat_pairs in results for pair in chat_pairs]


def _wait_delivered(tenant: Tenant, message_ids: set[str], simulator_state: str) -> list[dict[str, object]]:
    def done() -> list[dict[str, object]] | None:
        log = [e for e in read_log(Path(simulator_state)) if e["message_id"] in message_ids and e["outcome"] == "sent"]
        return log if {e["message_id"] for e in log} == message_ids else None

    return wait_for(done, timeout=60, interval=0.2, what="every message to reach the device")


def test_one_chat_keeps_acceptance_order_with_competing_workers(
    server: Server, tenant: Tenant, simulator_state: str
) -> None:
    chat = "+15552100777"
    workers = 2 if server.dialect == "postgresql" else 0  # on SQLite one process owns the workers
    with extra_workers(server, simulator_state, workers):
        sent = _send_all(tenant, [(chat, f"m{i}") for i in range(200)], parallel=1)
        ids = [mid for _, mid in sent]
        log = _wait_delivered(tenant, set(ids), simulator_state)
    assert [e["message_id"] for e in log] == ids
    assert all(n == 1 for n in Counter(e["message_id"] for e in log).values())


def test_fifty_chats_in_parallel_all_complete_once(server: Server, tenant: Tenant, simulator_state: str) -> None:
    chats = [f"+1555220{i:04d}" for i in range(1000, 1050)]
    workers = 2 if server.dialect == "postgresql" else 0
    with extra_workers(server, simulator_state, workers):
        sent = _send_all(tenant, [(c, f"{c}-{k}") for c in chats for k in range(4)], parallel=10)
        log = _wait_delivered(tenant, {mid for _, mid in sent}, simulator_state)
    counts = Counter(e["message_id"] for e in log)
    assert len(counts) == 200 and set(counts.values()) == {1}
    for chat in chats:
        expected = [mid for c, mid in sent if c == chat]
        assert [e["message_id"] for e in log if e["message_id"] in set(expected)] == expected
