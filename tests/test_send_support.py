"""Helpers shared by the send tests (tests/test_send_*.py): raw HTTP sends, error checks, direct DB seeding.

No tests live here. Rows are written straight through ``server.runtime.engine`` (SQLAlchemy Core) where the
API has no way yet to create them (inbound messages, explicit groups, provider GUIDs, old messages).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import blooio
import httpx
from sqlalchemy import insert, select, update

from openbloo.account.numbers import add_number, set_number
from openbloo.auth.keys import create_key
from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.ids import new_id, now_ms
from tests.conftest import Server, Tenant, make_tenant, unique_number

DAY_MS = 24 * 3600 * 1000


def enc(chat_id: str) -> str:
    """Percent-encode a chat id the way careful clients do (``+`` → ``%2B``, ``,`` → ``%2C``, ``@`` → ``%40``)."""
    return quote(chat_id, safe="")


def client_for(server: Server, api_key: str | None) -> httpx.Client:
    """An independent client. ``verify=False``: the test server speaks plain HTTP, and loading the CA bundle
    for every new client would cost ~20 ms each (``Tenant.http()`` / ``Tenant.sdk()`` do that).
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else None
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=30, verify=False, trust_env=False)


def http(t: Tenant) -> httpx.Client:
    """Like ``Tenant.http()``, cheaper."""
    return client_for(t.server, t.api_key)


def sdk(t: Tenant, max_retries: int = 0) -> blooio.Blooio:
    """Like ``Tenant.sdk()`` (the official SDK client, no retries), cheaper."""
    return blooio.Blooio(
        base_url=t.server.base_url,
        api_key=t.api_key,
        max_retries=max_retries,
        http_client=client_for(t.server, None),
    )


def send(
    t: Tenant,
    chat_id: str,
    body: Any,
    *,
    encoded: bool = True,
    headers: dict[str, str] | None = None,
    client: httpx.Client | None = None,
) -> httpx.Response:
    path = f"/chats/{enc(chat_id) if encoded else chat_id}/messages"
    if client is not None:
        return client.post(path, json=body, headers=headers)
    with http(t) as c:
        return c.post(path, json=body, headers=headers)


def accepted(resp: httpx.Response, status: int = 202) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["status"] == "queued"
    return body


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["error"] == "ApiError"
    assert body["status"] == status
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def get_message(t: Tenant, chat_id: str, message_id: str) -> dict[str, Any]:
    with http(t) as c:
        resp = c.get(f"/chats/{enc(chat_id)}/messages/{message_id}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def db_write(server: Server, unit: Callable[[Batch], Any]) -> Any:
    """Run a unit of work on the server's own writer thread (and batch), like a request would."""

    async def go() -> Any:
        return await server.runtime.writer.run(unit)

    return asyncio.run(go())


def configure(server: Server, phone: str, **values: Any) -> None:
    """Reconfigure a number (plan, limits, active). Do it before the key's first request, or wait 0.6 s."""
    db_write(server, set_number(phone, **values))


def add_sender(server: Server, t: Tenant, phone: str | None = None, **kwargs: Any) -> str:
    """Another number in ``t``'s organization; returns its phone number."""
    return str(db_write(server, add_number(phone or unique_number(), org_name=t.org, **kwargs))["phone_number"])


def new_tenant(server: Server, **number_kwargs: Any) -> Tenant:
    """A fresh organization with one key and one number (``conftest.make_tenant``), e.g.
    ``transport="bluebubbles"`` without a device: its messages stay ``queued``."""
    return make_tenant(server, **number_kwargs)


def parked_tenant(server: Server) -> Tenant:
    """A tenant whose number has no device yet (BlueBubbles, unconfigured): its messages stay ``queued`` with
    protocol ``pending``, and nothing but the test touches their rows. The simulator numbers of the default
    tenant are sent and delivered by the running dispatcher within milliseconds.
    """
    return new_tenant(server, transport="bluebubbles")


def rows(server: Server, table: Any, *where: Any) -> list[Any]:
    with server.runtime.engine.connect() as conn:
        return list(conn.execute(select(table).where(*where)))


def message_row(server: Server, message_id: str) -> Any:
    found = rows(server, m.messages, m.messages.c.id == message_id)
    assert len(found) == 1
    return found[0]


def update_message(server: Server, message_id: str, **values: Any) -> None:
    def unit(batch: Batch) -> None:
        batch.conn.execute(update(m.messages).where(m.messages.c.id == message_id).values(**values))

    db_write(server, unit)


def number_id(server: Server, phone: str) -> str:
    found = rows(server, m.numbers, m.numbers.c.phone_number == phone)
    return str(found[0].id)


def seed_inbound(
    server: Server,
    t: Tenant,
    contact: str,
    *,
    via: str | None = None,
    provider_id: str | None = None,
    time_sent: int | None = None,
) -> str:
    """Record that ``contact`` (E.164 or lower-case e-mail) wrote to number ``via`` first: contact, chat,
    conversation (inbound_count +1) and the inbound message, as the receive path does. Returns the message id.
    Inbound rows are never touched by the dispatcher, so their provider id and time stay as given.
    """
    num = number_id(server, via or t.number)
    org = t.organization_id
    kind = "email" if "@" in contact else "phone"

    def unit(batch: Batch) -> str:
        conn, now = batch.conn, now_ms()
        ct, ch, cv = m.contacts, m.chats, m.conversations
        row = conn.execute(select(ct.c.id).where(ct.c.organization_id == org, ct.c.identifier == contact)).first()
        contact_id = row.id if row is not None else new_id("ct_")
        if row is None:
            conn.execute(
                insert(ct).values(id=contact_id, organization_id=org, identifier=contact, type=kind, created_at=now)
            )
        row = conn.execute(select(ch.c.id).where(ch.c.organization_id == org, ch.c.chat_key == contact)).first()
        chat_id = row.id if row is not None else new_id("chat_")
        if row is None:
            conn.execute(
                insert(ch).values(
                    id=chat_id,
                    organization_id=org,
                    chat_key=contact,
                    type=kind,
                    contact_id=contact_id,
                    message_count=0,
                    inbound_count=0,
                    outbound_count=0,
                    created_at=now,
                )
            )
        conn.execute(
            update(ch)
            .where(ch.c.id == chat_id)
            .values(
                last_number_id=num,
                message_count=ch.c.message_count + 1,
                inbound_count=ch.c.inbound_count + 1,
            )
        )
        row = conn.execute(select(cv.c.id).where(cv.c.chat_id == chat_id, cv.c.number_id == num)).first()
        conv_id = row.id if row is not None else new_id("conv_")
        if row is None:
            conn.execute(
                insert(cv).values(
                    id=conv_id,
                    organization_id=org,
                    chat_id=chat_id,
                    number_id=num,
                    inbound_count=0,
                    created_at=now,
                )
            )
        conn.execute(update(cv).where(cv.c.id == conv_id).values(inbound_count=cv.c.inbound_count + 1))
        message_id = new_id("msg_")
        conn.execute(
            insert(m.messages).values(
                id=message_id,
                organization_id=org,
                chat_id=chat_id,
                conversation_id=conv_id,
                number_id=num,
                direction="inbound",
                status="received",
                protocol="imessage",
                text="hello first",
                provider_id=provider_id,
                time_sent=time_sent if time_sent is not None else now,
                created_at=now,
            )
        )
        return message_id

    return str(db_write(server, unit))


def insert_group(
    server: Server,
    t: Tenant,
    *,
    members: tuple[str, ...] = (),
    chat_guid: str | None = None,
    name: str | None = "Team",
    number: str | None = None,
    deleted: bool = False,
) -> str:
    """An explicit (named) group, as ``POST /groups`` will create it (``number``: the sender it lives on)."""
    group_id = new_id("grp_")
    num = number_id(server, number) if number is not None else None

    def unit(batch: Batch) -> None:
        now = now_ms()
        batch.conn.execute(
            insert(m.groups).values(
                id=group_id,
                organization_id=t.organization_id,
                number_id=num,
                name=name,
                chat_guid=chat_guid,
                participants_key=",".join(sorted(members)) or None,
                created_at=now,
                deleted_at=now if deleted else None,
            )
        )
        for ident in members:
            batch.conn.execute(insert(m.group_members).values(group_id=group_id, identifier=ident, added_at=now))

    db_write(server, unit)
    return group_id


def add_key(server: Server, t: Tenant, name: str) -> Any:
    """A second API key of ``t``'s organization (``.api_key``, ``.prefix``)."""
    return db_write(server, create_key(t.org, name))


def key_client(server: Server, api_key: str) -> httpx.Client:
    return client_for(server, api_key)


def wait_key_cache() -> None:
    """The key → pool cache lives 0.5 s in tests; a number reconfigured after a request needs this."""
    time.sleep(0.6)
