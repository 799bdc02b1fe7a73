"""A send committed by an API process wakes the worker process at once (PostgreSQL: NOTIFY / LISTEN; SQLite:
a datagram to the worker's socket next to the database), so delivery and its webhook do not wait for the
worker's next poll."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import own_postgres_database
from tests.helpers import path_id, wait_for
from tests.receiver import Receiver
from tests.serve_process import OPENBLOO, ServeProcess

# Polls far longer than the test waits: only a wake-up from the API process's commit can be in time.
SLOW_POLLS = {
    "OPENBLOO_DISPATCHER_POLL_SECONDS": "30",
    "OPENBLOO_WEBHOOK_POLL_SECONDS": "30",
    "OPENBLOO_SIMULATOR_DELIVERY_MS": "0",
    "OPENBLOO_SIMULATOR_READ_MS": "0",
    "OPENBLOO_WEBHOOK_ALLOW_PRIVATE": "true",
    "OPENBLOO_LOG_LEVEL": "warning",
}


@pytest.fixture
def pg_url(postgres_database: str) -> Iterator[str]:
    with own_postgres_database(postgres_database, "openbloo_wake") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'openbloo.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_the_worker_process_is_woken_by_the_api_process(any_url: str, tmp_path: Path) -> None:
    pg_url = any_url
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENBLOO_")}, **SLOW_POLLS}
    api = ServeProcess(pg_url, tmp_path, env, "--no-workers").start()
    receiver = Receiver().start()
    worker: subprocess.Popen[bytes] | None = None
    try:
        http = httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {api.api_key}"}, timeout=10)
        r = http.post("/webhooks", json={"webhook_url": receiver.url, "webhook_type": "status"})
        assert r.status_code in (200, 201), r.text
        worker = subprocess.Popen(
            [OPENBLOO, "worker", "--database-url", pg_url],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(3.0)  # the worker has started, claimed what there was (nothing) and sleeps in its poll
        for n in range(3):
            to = f"+1555777010{n}"
            sent_at = time.monotonic()
            mid = http.post(f"/chats/{path_id(to)}/messages", json={"text": f"wake {n}"}).json()["message_id"]

            def delivered(to: str = to, mid: str = mid) -> bool:
                got = http.get(f"/chats/{path_id(to)}/messages/{mid}").json()
                return bool(got["status"] == "delivered")

            def webhooked(mid: str = mid) -> bool:
                return "message.delivered" in receiver.event_types(mid)

            wait_for(delivered, timeout=5, what=f"message {n} delivered by the worker")
            wait_for(webhooked, timeout=5, what=f"message {n}'s message.delivered webhook")
            assert time.monotonic() - sent_at < 5
            time.sleep(0.5)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(15)
        api.stop()
        receiver.stop()


def test_the_listener_reconnects_after_losing_its_connection(pg_url: str) -> None:
    import asyncio

    import psycopg

    from openbloo.db.wakeups import JOBS, PgWakeups

    async def scenario() -> None:
        woke = asyncio.Event()
        listener = PgWakeups(pg_url, {JOBS: [woke.set]})
        await listener.start()
        try:
            await asyncio.wait_for(listener.listening.wait(), 10)
            await asyncio.wait_for(woke.wait(), 5)  # the wake-up on (re)connecting: news missed meanwhile
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as other:
                woke.clear()
                await other.execute(f"NOTIFY {JOBS}")
                await asyncio.wait_for(woke.wait(), 5)
                cur = await other.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
                pids = [r[0] for r in await cur.fetchall()]
                assert len(pids) == 1
                await other.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
                deadline = asyncio.get_running_loop().time() + 10
                while listener.listening.is_set():  # it notices the loss ...
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
                await asyncio.wait_for(listener.listening.wait(), 10)  # ... and listens again
                woke.clear()
                await other.execute(f"NOTIFY {JOBS}")
                await asyncio.wait_for(woke.wait(), 5)
        finally:
            await listener.stop()

    asyncio.run(scenario())


def test_sqlite_wakeups_reach_the_one_listener_and_survive_a_killed_one(tmp_path: Path) -> None:
    import asyncio
    import socket

    from openbloo.db.wakeups import JOBS, WEBHOOKS, SqliteWakeups, notify_sqlite, socket_path

    database = str(tmp_path / "openbloo.db")

    async def scenario() -> None:
        # A socket file left by a killed worker: nobody receives on it, the next worker takes it over.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stale.bind(socket_path(database))
        stale.close()
        jobs, hooks = asyncio.Event(), asyncio.Event()
        listener = SqliteWakeups(database, {JOBS: [jobs.set], WEBHOOKS: [hooks.set]})
        await listener.start()
        second = SqliteWakeups(database, {JOBS: []})  # a second worker process on the file polls instead
        await second.start()
        try:
            await asyncio.wait_for(jobs.wait(), 5)  # woken on start: whatever was committed before
            jobs.clear(), hooks.clear()
            notify_sqlite(database, [JOBS])  # from this process the listener is skipped (woken in-process) ...
            await asyncio.sleep(0.2)
            assert not jobs.is_set()
            other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # ... another process's datagrams wake it
            other.setblocking(False)
            for channel in (JOBS, JOBS, JOBS, WEBHOOKS):
                other.sendto(channel.encode(), socket_path(database))
            other.close()
            await asyncio.wait_for(jobs.wait(), 5)
            await asyncio.wait_for(hooks.wait(), 5)
        finally:
            await second.stop()
            await listener.stop()
        assert not os.path.exists(socket_path(database))
        notify_sqlite(database, [JOBS])  # nobody listens: nothing happens, nothing raised

    asyncio.run(scenario())
