"""The send route answered at the HTTP protocol, without ASGI: uvicorn's httptools protocol, specialised.

Profiles of the send route under load put uvicorn's ASGI machinery (a scope dict, a request/response cycle
with its event, a task, the receive and send coroutines, header validation) at about as much CPU as
everything openbloo does to accept the message. For ``POST /v2/api/chats/{chatId}/messages`` from a key
already in the key cache, :class:`LeanHttpToolsProtocol` hands the parsed request straight to the send lane
(:meth:`openbloo.messages.send_lane.SendLane.submit`) and writes the answer when the writer's batch has
committed, from a callback: the same checks, the same answers, the same durability, no task per request.
Every other request, and a send it cannot take this way (a key not in the cache yet, ``Expect:
100-continue``, a pipelined request behind another one), goes through uvicorn's ASGI path unchanged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from openbloo.asgi import MAX_BODY_BYTES
from openbloo.errors import ApiError

if TYPE_CHECKING:
    from openbloo.app import Openbloo

log = logging.getLogger("openbloo.http")


class _Unset:
    def set(self) -> None:
        pass


class _LeanCycle:
    """Stands in uvicorn's bookkeeping for a send answered without ASGI, until its answer is written.

    uvicorn starts a request at once only when the connection's current cycle is complete, and otherwise
    queues it (HTTP/1.1 pipelining: answers go out in request order); with this as the current cycle, a
    request pipelined behind a lean send waits its turn the same way. uvicorn's graceful shutdown clears
    ``keep_alive`` of a cycle still running: the answer is then written and the connection closed.
    """

    __slots__ = ("disconnected", "keep_alive", "response_complete")
    message_event = _Unset()

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False


class LeanHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; the send route of a cached key is answered without ASGI."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # openbloo.app.Openbloo, when that is the app (anything else is served the ASGI way only)
        self._front: Openbloo | None = getattr(self.config.app, "lean_front", None)
        # The send being read: (the front's parsed request, or None once its body is over the limit; body so far)
        self._lean: tuple[Any, bytearray] | None = None
        # What only uvicorn's way does: access logs, its concurrency limit, ``Expect: 100-continue``.
        self._lean_allowed = self._front is not None and not self.config.access_log and self.limit_concurrency is None

    # -- parser callbacks --------------------------------------------------------------------------------
    def on_headers_complete(self) -> None:
        if self._lean_allowed:
            cycle = self.cycle
            idle = cycle is None or cycle.response_complete  # no answer of an earlier request still to come
            if idle and not self.expect_100_continue and self.parser.get_method() == b"POST":
                assert self._front is not None
                request = self._front.lean_request(self.url, self.headers)
                if request is not None:
                    http_version = self.parser.get_http_version()
                    self.cycle = _LeanCycle(http_version != "1.0" and self.parser.should_keep_alive())  # type: ignore[assignment]
                    self._lean = (request, bytearray())
                    return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        lean = self._lean
        if lean is None:
            super().on_body(body)
            return
        request, buf = lean
        if request is None:
            return
        if len(buf) + len(body) > MAX_BODY_BYTES:
            self._lean = (None, bytearray())  # too large: refused when the message is complete
            return
        buf += body

    def on_message_complete(self) -> None:
        lean = self._lean
        if lean is None:
            super().on_message_complete()
            return
        self._lean = None
        cycle = self.cycle
        request, body = lean
        if request is None:
            error = ApiError(413, "payload_too_large", f"Request body is larger than {MAX_BODY_BYTES} bytes")
            self._answer(cycle, error.status, error.body_bytes(), error.response_headers())
            return
        assert self._front is not None
        self._front.lean_send(request, bytes(body), lambda s, b, h: self._answer(cycle, s, b, h))

    # -- the answer ----------------------------------------------------------------------------------------
    def _answer(self, cycle: Any, status: int, body: bytes, headers: dict[str, str] | None) -> None:
        cycle.response_complete = True
        transport = self.transport
        if transport.is_closing():
            return
        parts = [STATUS_LINE[status]]
        for raw_name, raw_value in self.server_state.default_headers:
            parts += (raw_name, b": ", raw_value, b"\r\n")
        parts.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        if headers:
            for name, value in headers.items():
                parts += (name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
        if not cycle.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        transport.write(b"".join(parts))
        if not cycle.keep_alive:
            transport.close()
            return
        self.on_response_complete()  # counts the request, starts one queued behind it, arms the keep-alive timer


def uvicorn_options() -> dict[str, Any]:
    """What every uvicorn server of openbloo's API is started with (``serve``, the bench's API processes, the
    tests' servers): this protocol, and no access log (a log line per request costs more than a send)."""
    return {"http": LeanHttpToolsProtocol, "access_log": False}
