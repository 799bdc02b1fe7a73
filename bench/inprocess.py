"""``python -m bench.inprocess [--workers] [--sends N | --memory-secs S]``: the send route driven in-process.

The ASGI app is called directly by 32 concurrent tasks with the same mix as ``send.lua`` (90 % single texts to
10,000 chats, 5 % three-bubble arrays, 5 % three-recipient sends, an ``Idempotency-Key`` each), on a fresh
SQLite file (or ``--database-url``), with the zero-delay simulator. It prints one JSON line: sends accepted
per second, the process's CPU time per accepted send, and its cores used. ``--workers`` runs the dispatcher
and the webhook sender in the process, as ``openbloo serve`` does.

Without the network and the load generator on the same two cores, successive runs differ by a few per
cent, not by tens: the tool for before/after comparisons of one change. Run another source tree with
``PYTHONPATH=TREE/src``, alternating the two a few times, and compare medians.

``--memory-secs S`` drives the mix for S seconds instead and prints, every ``--sample-secs``, where the process's
memory is (:mod:`bench.memory`): resident set, the allocator's bytes in use and free, Python's live blocks and
objects, and how full each bounded cache of the send path is. It tells caches filling from memory kept per
message and from the allocator's fragmentation, which a resident-set curve alone cannot.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

CONCURRENCY = 32
CHATS = 10_000


def _handle(n: int) -> str:
    # The chats of send.lua: fictional +1555 numbers whose last four digits avoid the simulator's test rules.
    return f"%2B15557{n // 3000:02d}{1000 + n % 3000:04d}"


class Mix:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.seq = 0

    def next(self) -> tuple[str, bytes, str]:
        self.seq += 1
        key = f"b{time.time_ns() // 1000}x1x{self.seq}"
        r = self.rnd.randint(1, 100)
        chat = self.rnd.randint(0, CHATS - 1)
        single = json.dumps({"text": key}).encode()
        if r <= 90:
            return f"/v2/api/chats/{_handle(chat)}/messages", single, key
        if r <= 95:
            bubbles = json.dumps({"text": [f"{key} 1", f"{key} 2", f"{key} 3"]}).encode()
            return f"/v2/api/chats/{_handle(chat)}/messages", bubbles, key
        many = "%2C".join(_handle((chat + i) % CHATS) for i in range(3))
        return f"/v2/api/chats/{many}/messages", single, key


async def _drive(args: argparse.Namespace, url: str, state: Path) -> dict[str, Any]:
    from openbloo.account.numbers import add_number
    from openbloo.app import create_app
    from openbloo.auth.keys import create_key
    from openbloo.config import Settings
    from openbloo.db.writer import run_unit
    from openbloo.runtime import Runtime

    settings = Settings(
        database_url=url,
        simulator_delivery_ms=0,
        simulator_read_ms=0,
        simulator_state=str(state),
        log_level="warning",
    )
    runtime = Runtime.create(settings)
    runtime.run_workers = bool(args.workers)  # as serve [--no-workers]: where the writer's batches run follows it
    app = create_app(runtime)
    runtime.start()
    key = run_unit(runtime.engine, create_key("default", "inprocess")).api_key
    run_unit(runtime.engine, add_number("+15550100000", org_name="default"))
    auth = b"Bearer " + key.encode()
    mix = Mix(args.seed)
    statuses: dict[int, int] = {}

    async def one() -> None:
        path, body, idem = mix.next()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"authorization", auth),
                (b"idempotency-key", idem.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
        }
        received = False
        status = [0]

        async def receive() -> dict[str, Any]:
            nonlocal received
            if received:
                return {"type": "http.disconnect"}
            received = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]

        await app(scope, receive, send)
        statuses[status[0]] = statuses.get(status[0], 0) + 1

    async def client(n: int) -> None:
        for _ in range(n):
            await one()

    if args.memory_secs:
        return await _memory_run(args, runtime, one)

    workers = None
    if args.workers:
        from openbloo.workers import Workers

        workers = Workers(runtime)
        await workers.start()
    try:
        await asyncio.gather(*(client(args.warmup // CONCURRENCY) for _ in range(CONCURRENCY)))
        per_client = max(1, args.sends // CONCURRENCY)
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(client(per_client) for _ in range(CONCURRENCY)))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    finally:
        if workers is not None:
            await workers.stop()
        await runtime.close()
    sends = per_client * CONCURRENCY
    return {
        "workers": bool(args.workers),
        "sends": sends,
        "accepted_per_s": round(sends / wall, 1),
        "cpu_us_per_send": round(cpu * 1e6 / sends, 1),
        "cores": round(cpu / wall, 2),
        "statuses": statuses,
        "batches": runtime.writer.batches,
        "units": runtime.writer.units,
    }


async def _memory_run(args: argparse.Namespace, runtime: Any, one: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """Send for ``args.memory_secs`` seconds as fast as the mix goes, reading the process's memory as it runs."""
    from bench import memory

    workers = None
    if args.workers:
        from openbloo.workers import Workers

        workers = Workers(runtime)
        await workers.start()
    sends = 0
    t0 = time.monotonic()
    deadline = t0 + args.memory_secs

    async def client() -> None:
        nonlocal sends
        while time.monotonic() < deadline:
            await one()
            sends += 1

    samples: list[dict[str, Any]] = []

    def take_sample() -> None:
        facts = memory.sample()
        facts.update(t=round(time.monotonic() - t0, 1), sends=sends)
        samples.append(facts)
        print(json.dumps({"sample": facts}), file=sys.stderr, flush=True)

    async def sampler() -> None:
        while time.monotonic() < deadline:
            take_sample()
            await asyncio.sleep(min(args.sample_secs, max(0.0, deadline - time.monotonic())))

    try:
        await asyncio.gather(sampler(), *(client() for _ in range(CONCURRENCY)))
        take_sample()  # the last one once every send still in flight at the deadline has been answered
    finally:
        if workers is not None:
            await workers.stop()
        await runtime.close()
    return {
        "workers": bool(args.workers),
        "secs": args.memory_secs,
        "sends": sends,
        "accepted_per_s": round(sends / (time.monotonic() - t0), 1),
        "cache_limits": memory.cache_limits(),
        "windows": memory.summarize(samples, args.window_secs),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", action="store_true", help="run the dispatcher and webhook sender too (as serve)")
    ap.add_argument("--sends", type=int, default=6000, help="measured sends")
    ap.add_argument("--warmup", type=int, default=1600, help="sends before the measured ones")
    ap.add_argument("--database-url", help="default: a fresh SQLite file in a temporary directory")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--memory-secs", type=float, default=0, help="a memory run of this many seconds (see above)")
    ap.add_argument("--sample-secs", type=float, default=10, help="memory run: seconds between samples")
    ap.add_argument("--window-secs", type=float, default=60, help="memory run: seconds a window of the summary")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="openbloo-inprocess-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'openbloo.db'}"
        migrate = [sys.executable, "-m", "openbloo.cli", "migrate", "--database-url", url]
        subprocess.run(migrate, check=True, capture_output=True)
        print(json.dumps(asyncio.run(_drive(args, url, Path(tmp) / "simulator.db"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
