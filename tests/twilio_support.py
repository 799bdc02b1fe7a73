"""Twilio test support: a stand-in for openbloo's Twilio callback routes (for the transport's own tests), a
recording sink, an Outgoing builder, and a tenant whose number is served by the fake Twilio through openbloo's
real callback routes (:func:`start_twilio_number`).

``POST /twilio/status`` and ``POST /twilio/inbound`` rebuild the public URL the way the real routes must
(the configured base + the path + the raw query string), hand the decoded form and the signature header
to :class:`~openbloo.transports.twilio.TwilioTransport`, and answer 403 on a bad signature, 204 for a
status callback, empty TwiML for an inbound message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import select, update
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from openbloo.db import models as m
from openbloo.db.writer import run_unit
from openbloo.ids import new_id, now_ms
from openbloo.transports.base import EventSink, InboundMessage, Outgoing, StatusUpdate
from openbloo.transports.twilio import (
    MESSAGE_ID_PARAM,
    SIGNATURE_HEADER,
    TWIML_CONTENT_TYPE,
    TwilioTransport,
    empty_twiml,
    opt_out_action,
)
from tests.conftest import Server, Tenant, make_tenant, unique_number
from tests.fakes.server import ThreadedServer
from tests.fakes.twilio import FakeTwilio
from tests.helpers import path_id, wait_for

TO = "+15551234567"
FROM = "+15557650000"


def outgoing(text: str | None = "hello from openbloo", to: str = TO, **kwargs: Any) -> Outgoing:
    """One message for the transport, as the dispatcher would hand it over."""
    values: dict[str, Any] = {
        "message_id": new_id("msg_"),
        "attempt": 1,
        "sender": FROM,
        "chat_key": to,
        "recipients": (to,),
        "is_group": False,
        "text": text,
        "time_accepted": now_ms(),
    }
    values.update(kwargs)
    return Outgoing(**values)


class RecordingSink(EventSink):
    def __init__(self) -> None:
        self.updates: list[StatusUpdate] = []
        self.messages: list[InboundMessage] = []
        self._lock = threading.Lock()

    async def status(self, update: StatusUpdate) -> None:
        with self._lock:
            self.updates.append(update)

    async def inbound(self, message: InboundMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def statuses_of(self, message_id: str) -> list[str]:
        with self._lock:
            return [u.status for u in self.updates if u.message_id == message_id]


@dataclass
class Receiver:
    transport: TwilioTransport | None = None
    public_base: str | None = None  # as a proxy would present it; default: our own loopback URL
    answers: list[tuple[str, int]] = field(default_factory=list)
    opt_outs: dict[tuple[str, str], str] = field(default_factory=dict)  # (handle, number) → stop | start

    def start(self) -> Receiver:
        app = Starlette(
            routes=[
                Route("/twilio/status", self._status, methods=["POST"]),
                Route("/twilio/inbound", self._inbound, methods=["POST"]),
            ]
        )
        self._server = ThreadedServer(app).start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return self._server.url

    def public_url(self, request: Request) -> str:
        query = request.scope.get("query_string", b"").decode("latin-1")
        base = (self.public_base or self.url).rstrip("/")
        return base + request.scope["path"] + (f"?{query}" if query else "")

    async def _read(self, request: Request) -> tuple[str, list[tuple[str, str]], str | None]:
        form = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        return self.public_url(request), form, request.headers.get(SIGNATURE_HEADER)

    async def _status(self, request: Request) -> Response:
        assert self.transport is not None
        url, form, signature = await self._read(request)
        message_id = request.query_params.get(MESSAGE_ID_PARAM)
        ok = await self.transport.handle_status_callback(url, form, signature, message_id)
        self.answers.append(("status", 204 if ok else 403))
        return Response(status_code=204) if ok else Response("invalid signature", status_code=403)

    async def _inbound(self, request: Request) -> Response:
        assert self.transport is not None
        url, form, signature = await self._read(request)
        message = await self.transport.handle_inbound(url, form, signature)
        if message is None:
            self.answers.append(("inbound", 403))
            return Response("invalid signature", status_code=403)
        action = opt_out_action(message.text)
        if action is not None:
            self.opt_outs[(message.sender, message.to)] = action
        if self.transport.sink is not None:
            await self.transport.sink.inbound(message)
        self.answers.append(("inbound", 200))
        return Response(empty_twiml(), media_type=TWIML_CONTENT_TYPE)


# -- a tenant whose number is served by the fake Twilio, through openbloo's real callback routes ------------------


@dataclass
class TwilioNumber:
    fake: FakeTwilio
    tenant: Tenant

    @property
    def server(self) -> Server:
        return self.tenant.server

    def number_row(self) -> Any:
        with self.server.runtime.engine.connect() as conn:
            return conn.execute(select(m.numbers).where(m.numbers.c.id == self.tenant.allocation_id)).one()

    def callback_url(self, which: str) -> str:
        """``inbound`` or ``status``: the number's callback URL, as Twilio is told to call it."""
        return f"{self.server.root_url}/callbacks/twilio/{self.number_row().inbound_token}/{which}"

    def messages(self, chat_id: str) -> list[dict[str, Any]]:
        with self.tenant.http() as http:
            r = http.get(f"/chats/{path_id(chat_id)}/messages", params={"limit": 100})
        if r.status_code == 404:
            return []
        assert r.status_code == 200, r.text
        return list(r.json()["messages"])

    def detach(self) -> None:
        def unit(batch: Any) -> None:
            batch.conn.execute(
                update(m.numbers).where(m.numbers.c.id == self.tenant.allocation_id).values(transport_config={})
            )

        run_unit(self.server.runtime.engine, unit)


def twilio_config(fake: FakeTwilio, auth_token: str | None = None) -> dict[str, Any]:
    return {"account_sid": fake.account_sid, "auth_token": auth_token or fake.auth_token, "api_url": fake.url}


def start_twilio_number(server: Server, *, auth_token: str | None = None, **fake_options: Any) -> TwilioNumber:
    """A fresh organization whose one number is a Twilio number on a fresh fake; inbound texts reach openbloo."""
    fake = FakeTwilio(**fake_options).start()
    tenant = make_tenant(server, transport="twilio", transport_config={"twilio": twilio_config(fake, auth_token)})
    number = TwilioNumber(fake, tenant)
    fake.inbound_urls[tenant.number] = number.callback_url("inbound")
    return number


def sms_handle() -> str:
    """A recipient the fake Twilio delivers (no ``30NN`` / ``2999`` test pattern in its last four digits)."""
    while True:
        n = unique_number()
        if not n[-4:].startswith("30") and not n.endswith("2999"):
            return n


def wait_health(server: Server, number_id: str, status: str, timeout: float = 10.0) -> Any:
    def check() -> Any:
        with server.runtime.engine.connect() as conn:
            row = conn.execute(select(m.numbers).where(m.numbers.c.id == number_id)).one()
        return row if row.device_status == status else None

    return wait_for(check, timeout=timeout, what=f"device status {status}")
