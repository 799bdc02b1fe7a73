"""A loopback webhook receiver for the end-to-end scenario: records when each event arrives.

``python -m bench.receiver --port P --out FILE`` listens on 127.0.0.1 only, answers every request 200, and
keeps one line per request: ``recv_us,event,message_id`` (CLOCK_REALTIME microseconds, the
``X-Blooio-Event`` and ``X-Blooio-Message-Id`` headers). It writes FILE when it gets SIGTERM/SIGINT or
after ``--max-seconds``, whichever comes first, so it always stops by itself. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[int, str, str]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                recv_us = time.time_ns() // 1000
                length, event, message_id = 0, "", ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value.strip() or 0)
                    elif name == b"x-blooio-event":
                        event = value.strip().decode("latin-1")
                    elif name == b"x-blooio-message-id":
                        message_id = value.strip().decode("latin-1")
                if length:
                    await reader.readexactly(length)
                self.records.append((recv_us, event, message_id))
                writer.write(_OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


async def serve(port: int, out: str, max_seconds: float) -> None:
    recorder = Recorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max_seconds)
    server.close()
    with open(out, "w") as f:
        for recv_us, event, message_id in recorder.records:
            f.write(f"{recv_us},{event},{message_id}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-seconds", type=float, default=900.0)
    args = ap.parse_args()
    asyncio.run(serve(args.port, args.out, args.max_seconds))


if __name__ == "__main__":
    main()
