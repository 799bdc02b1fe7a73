"""A webhook receiver on loopback for the tests: a real HTTP server that records what it gets.

``Receiver`` answers each POST with what ``respond`` says (200 by default), can be slowed down, and can be
stopped and started again on the same port (a receiver outage). It verifies nothing itself; tests check
signatures with :func:`openbloo.events.signing.verify`, the documented algorithm.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event(self) -> str:
        return self.headers.get("x-blooio-event", "")


class _QuietServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (openbloo's timeout, a stopped test): nothing to report


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        # (request number, request) → (status, body); request numbers count from 1.
        self.respond: Callable[[int, Received], tuple[int, bytes]] = lambda _n, _r: (200, b'{"ok":true}')
        self.delay = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                with owner.lock:
                    owner.received.append(got)
                    n = len(owner.received)
                if owner.delay:
                    time.sleep(owner.delay)
                status, reply = owner.respond(n, got)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, message_id: str | None = None) -> list[Received]:
        with self.lock:
            got = list(self.received)
        if message_id is None:
            return got
        return [r for r in got if r.headers.get("x-blooio-message-id") == message_id]

    def event_types(self, message_id: str | None = None) -> list[str]:
        return [r.event for r in self.events(message_id)]
