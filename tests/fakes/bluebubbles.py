"""A fake BlueBubbles Server: a real HTTP server on 127.0.0.1 that behaves like the Mac (TRANSPORTS.md §1.12).

It speaks ``/api/v1`` with ``?password=`` (or ``guid`` / ``token``) auth and the server's envelope; keeps chats
and messages in memory; honours ``method`` forcing, the Private API switch (its middleware's 500) and the
in-flight ``tempGuid`` 400; and drives webhooks like the real one: ``new-message`` twice for each of our sends
(plain and with ``tempGuid``, in random order, often before the send is answered), ``updated-message`` for
delivery and read, ``message-send-error`` for failing addresses. Test knobs: :meth:`lose_webhooks`,
:meth:`fail_next_send`, ``answer_delay``, :meth:`go_offline` / :meth:`go_online`, :meth:`inject_inbound`.
Every request is recorded (:attr:`requests`) so tests can check the wire format.

By hand: ``python -m tests.fakes.bluebubbles --port 1234 --password secret`` (``--help`` for the rest), then
``curl -X POST 'localhost:1234/fake/inbound?password=secret' -d '{"from": "+15551230000", "text": "hi"}'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from openbloo.ids import now_ms
from tests.fakes import bluebubbles_model as model
from tests.fakes.bluebubbles_model import Attachment, Chat, Message, new_guid

EVENTS = {
    "*", "new-message", "updated-message", "message-send-error", "group-name-change", "participant-added",
    "participant-removed", "participant-left", "chat-read-status-changed", "typing-indicator", "hello-world",
}  # fmt: skip
PAPI_FIELDS = ("effectId", "subject", "selectedMessageGuid", "ddScan", "attributedBody")
PAPI_SUMMARY = "Please make sure you have completed the setup for the Private API, and your helper is connected!"
REACTIONS = {"love", "like", "dislike", "laugh", "emphasize", "question"}


@dataclass
class Recorded:
    method: str
    path: str  # after /api/v1
    query: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # field → (name, size, type)
    contents: dict[str, bytes] = field(default_factory=dict, repr=False)  # field → the uploaded bytes


class Refusal(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def ok(message: str, data: Any = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"status": 200, "message": message, **extra}
    if data is not None:
        body["data"] = data
    return JSONResponse(body)


def fail(status: int, message: str, etype: str, detail: str, data: Any = None) -> Refusal:
    body: dict[str, Any] = {"status": status, "message": message, "error": {"type": etype, "message": detail}}
    if data is not None:
        body["data"] = data
    return Refusal(JSONResponse(body, status_code=status))


def bad_request(detail: str) -> Refusal:
    return fail(400, "You've made a bad request! Please check your request params & body", "Validation Error", detail)


class FakeBlueBubbles:
    def __init__(
        self,
        *,
        password: str = "fake-password",
        port: int = 0,
        private_api: bool = True,
        helper_connected: bool = True,
        dm_prefix: str = "iMessage",
        delivery_ms: int | None = 50,
        read_ms: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.password = password
        self.port = port or _free_port()
        self.private_api = private_api
        self.helper_connected = helper_connected
        self.delivery_ms = delivery_ms  # delivered this long after a send (None: never)
        self.read_ms = read_ms  # read this long after delivery, 1:1 chats only (None: never)
        self.answer_delay = 0.0  # seconds a send is held after its message exists, before it is answered
        self.bad_addresses: set[str] = set()  # sends to these fail with error 22 (not on iMessage)
        self.sms_only: set[str] = set()  # iMessage availability says no
        self.files: dict[str, tuple[bytes, str]] = {}  # served at /fake/files/{name}, for attachment URLs
        self.rng = random.Random(seed)
        self.store = model.Store(dm_prefix, self.rng)
        self.requests: list[Recorded] = []
        self.webhooks: list[dict[str, Any]] = []
        self.delivered_webhooks: list[dict[str, Any]] = []
        self.lost_webhooks: list[dict[str, Any]] = []
        self._lose = 0
        self._fail_next: int | None = None
        self._send_cache: set[str] = set()
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._http: httpx.AsyncClient | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeBlueBubbles:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        config.timeout_graceful_shutdown = 1
        self._server = _QuietServer(config)
        self._thread = threading.Thread(target=self._server.run, name=f"fake-bluebubbles-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake BlueBubbles server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = self._thread = None

    def go_offline(self) -> None:
        """The Mac is gone: connections are refused until :meth:`go_online`."""
        self.stop()

    def go_online(self) -> None:
        self.start()

    # -- knobs ----------------------------------------------------------------------------------------------------
    def lose_webhooks(self, n: int) -> None:
        """The next ``n`` webhook calls are never made (BlueBubbles neither retries nor replays)."""
        with self._lock:
            self._lose += n

    def fail_next_send(self, error: int = 4) -> None:
        """The next send creates its message with ``error`` and answers the server's 500 with no data."""
        with self._lock:
            self._fail_next = error

    # -- inspecting ---------------------------------------------------------------------------------------------
    def calls(self, path: str, method: str = "POST") -> list[Recorded]:
        return [r for r in list(self.requests) if r.path == path and r.method == method]

    def messages_from_me(self) -> list[Message]:
        with self._lock:
            return [m for m in self.store.messages if m.is_from_me]

    # -- driving ------------------------------------------------------------------------------------------------
    def inject_inbound(
        self,
        sender: str,
        text: str | None,
        *,
        participants: list[str] | None = None,
        chat_guid: str | None = None,
        attachment: tuple[str, bytes, str] | None = None,
    ) -> dict[str, Any]:
        """Someone wrote to the Mac (1:1, or in the group of ``participants``): stored, then ``new-message``."""
        with self._lock:
            if participants is not None:
                chat = self.store.group([sender, *participants], chat_guid)
            else:
                chat = self.store.dm(sender, guid=chat_guid)
                if chat_guid and chat.guid != chat_guid:  # the same person under another GUID spelling
                    chat = Chat(chat_guid, [sender], rowid=chat.rowid)
            files = [Attachment(new_guid(), attachment[0], attachment[2], attachment[1])] if attachment else []
            message = self.store.add_message(chat, text, from_me=False, sender=sender, attachments=files)
            data = message.json(participants=True)
        self._soon(self._emit("new-message", data))
        return data

    def deliver(self, guid: str, *, read: bool = False) -> None:
        self._soon(self._receipt(guid, read=read))

    # -- webhooks -----------------------------------------------------------------------------------------------
    def _soon(self, coro: Any, delay: float = 0.0) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            return

        async def later() -> None:
            if delay:
                await asyncio.sleep(delay)
            await coro

        asyncio.run_coroutine_threadsafe(later(), loop)

    async def _emit(self, kind: str, data: Any) -> None:
        body = {"type": kind, "data": data}
        with self._lock:
            targets = [w["url"] for w in self.webhooks if kind in w["events"] or "*" in w["events"]]
        for url in targets:
            with self._lock:
                if self._lose > 0:
                    self._lose -= 1
                    self.lost_webhooks.append(body)
                    continue
            assert self._http is not None
            try:
                await self._http.post(url, json=body, timeout=10)
                self.delivered_webhooks.append(body)
            except httpx.HTTPError:
                pass  # fire and forget, like the real server

    async def _receipt(self, guid: str, *, read: bool) -> None:
        with self._lock:
            message = self.store.message(guid)
            if message is None:
                return
            message.date_delivered = message.date_delivered or now_ms()
            if read:
                message.date_read = now_ms()
            data = message.json(chats=False)
        await self._emit("updated-message", data)

    def _after_send(self, message: Message, temp: str | None) -> None:
        """The poller sees the new row: two ``new-message`` copies in either order, then receipts or the error."""
        copies = [message.json(participants=True), message.json(participants=True, temp_guid=temp)]
        self.rng.shuffle(copies)
        for i, data in enumerate(copies):
            self._soon(self._emit("new-message", data), delay=0.005 * i * self.rng.random())
        if message.error:
            self._soon(self._emit("message-send-error", message.json(temp_guid=temp)), delay=0.02)
            return
        if self.delivery_ms is not None:
            delivered = self.answer_delay + self.delivery_ms / 1000
            self._soon(self._receipt(message.guid, read=False), delay=delivered)
            if self.read_ms is not None and not message.chat.is_group:
                self._soon(self._receipt(message.guid, read=True), delay=delivered + self.read_ms / 1000)

    # -- the app ----------------------------------------------------------------------------------------------------
    def app(self) -> Starlette:
        from tests.fakes import bluebubbles_routes as routes

        @contextlib.asynccontextmanager
        async def lifespan(_app: Starlette) -> AsyncIterator[None]:
            self._loop = asyncio.get_running_loop()
            self._http = httpx.AsyncClient()
            try:
                yield
            finally:
                await self._http.aclose()

        return Starlette(
            routes=[*routes.api_routes(self), *routes.fake_routes(self)],
            lifespan=lifespan,
            exception_handlers={404: _plain_404, 405: _plain_404},
        )

    # -- shared by the routes -----------------------------------------------------------------------------------
    async def record(self, request: Request) -> tuple[Recorded, Any]:
        """Record the request; answer auth failures like the real middleware."""
        entry = Recorded(request.method, request.url.path.removeprefix("/api/v1"), dict(request.query_params))
        kind = request.headers.get("content-type", "")
        if "multipart/form-data" in kind:
            form = await request.form()
            for key, value in form.multi_items():
                if isinstance(value, str):
                    entry.form[key] = value
                else:
                    content = await value.read()
                    entry.files[key] = (value.filename or "", len(content), value.content_type or "")
                    entry.contents[key] = content
        else:
            raw = await request.body()
            if raw:
                try:
                    entry.json = json.loads(raw)
                except ValueError:
                    entry.json = None
        self.requests.append(entry)
        query = request.query_params
        given = next((query[k] for k in ("guid", "password", "token") if k in query), None)
        denied = "You are not authorized to access this resource"
        if given is None:
            raise fail(401, denied, "Authentication Error", "Missing server password!")
        if given.strip() != self.password.strip():
            raise fail(401, denied, "Authentication Error", "Unauthorized")
        return entry, entry.json if entry.json is not None else entry.form

    def require_private_api(self) -> None:
        if not self.private_api:
            raise fail(500, PAPI_SUMMARY, "iMessage Error", "iMessage Private API is not enabled!")
        if not self.helper_connected:
            raise fail(500, PAPI_SUMMARY, "iMessage Error", "iMessage Private API Helper is not connected!")

    def server_info(self) -> dict[str, Any]:
        return {
            "computer_id": "FAKE-MAC",
            "os_version": "15.1",
            "server_version": "1.9.9",
            "private_api": self.private_api,
            "proxy_service": "lan-url",
            "helper_connected": self.helper_connected and self.private_api,
            "detected_icloud": "owner@icloud.com",
            "detected_imessage": "owner@icloud.com",
            "macos_time_sync": 0,
            "local_ipv4s": ["127.0.0.1"],
            "local_ipv6s": [],
        }

    async def send(self, chat: Chat, text: str | None, temp: str | None, method: str, **extra: Any) -> Message:
        """One outgoing message: the in-flight check, the row, the webhooks, the held answer, the 500 quirk."""
        with self._lock:
            if temp and temp in self._send_cache:
                raise bad_request(f"Message is already queued to be sent! (Temp GUID: {temp})")
            if temp:
                self._send_cache.add(temp)
            error = self._fail_next or (22 if any(p in self.bad_addresses for p in chat.participants) else 0)
            self._fail_next = None
            message = self.store.add_message(chat, text, from_me=True, error=error, method=method, **extra)
            self._after_send(message, temp)
        try:
            held = time.monotonic()
            while time.monotonic() - held < self.answer_delay:  # setting answer_delay to 0 releases it
                await asyncio.sleep(0.02)
        finally:
            with self._lock:
                self._send_cache.discard(temp or "")
        if message.error:
            # The handler's own IMessageError is re-wrapped by its catch: 500, and the message is not attached.
            detail = "[500] Message sent with an error. See attached message"
            raise fail(500, "Message Send Error", "iMessage Error", detail)
        return message


async def _plain_404(_request: Request, _exc: Exception) -> Response:
    return PlainTextResponse("Not Found", status_code=404)


class _QuietServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        pass


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake BlueBubbles Server for trying openbloo by hand.")
    parser.add_argument("--port", type=int, default=1234)
    parser.add_argument("--password", default="secret")
    parser.add_argument("--no-private-api", action="store_true", help="run as if the Private API were off")
    parser.add_argument("--dm-prefix", default="iMessage", help="iMessage, or 'any' like macOS 26")
    parser.add_argument("--read-ms", type=int, default=1000, help="read receipts this long after delivery")
    args = parser.parse_args()
    fake = FakeBlueBubbles(
        password=args.password,
        port=args.port,
        private_api=not args.no_private_api,
        dm_prefix=args.dm_prefix,
        delivery_ms=500,
        read_ms=args.read_ms,
    )
    print(f"fake BlueBubbles Server on {fake.url} (password {args.password!r}); Ctrl-C stops it.")
    print(
        f"Inbound: curl -X POST '{fake.url}/fake/inbound?password={args.password}' "
        """-H 'Content-Type: application/json' -d '{"from": "+15551230000", "text": "hi"}'"""
    )
    config = uvicorn.Config(fake.app(), host="127.0.0.1", port=fake.port, log_level="info")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
