"""Page marks (openbloo.chats.page_marks): a page read from a mark is the page the plain walk reads, on both
stores, for every offset, limit and order; a message stored before a chat's newest (a device's older time)
is counted on the chat's row and drops the chat's marks, which are then found again."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from openbloo.addressing import parse_chat_id
from openbloo.chats.page_marks import PageMarks
from openbloo.chats.reads import list_messages
from openbloo.db import models as m
from openbloo.db.engine import make_async_engine
from openbloo.db.writer import run_unit
from openbloo.messages.inbound import record_inbound
from openbloo.transports.base import InboundMessage
from tests.conftest import Server, Tenant, unique_number
from tests.helpers import inbound, send

SPACING = 4


async def _page(conn: AsyncConnection, tenant: Tenant, handle: str, marks: PageMarks | None, **kw: Any) -> list[str]:
    _, items, _ = await list_messages(
        conn,
        tenant.organization_id,
        parse_chat_id(handle, "US"),
        since=None,
        until=None,
        marks=marks,
        **kw,
    )
    return [item["message_id"] for item in items]


def _chat_row(server: Server, handle: str, org: str) -> Any:
    c = m.chats
    with server.runtime.engine.connect() as conn:
        return conn.execute(
            sa.select(c.c.id, c.c.message_count, c.c.newest_message_time, c.c.time_order_breaks).where(
                c.c.organization_id == org, c.c.chat_key == handle
            )
        ).one()


def _every_page_matches(server: Server, tenant: Tenant, handle: str, marks: PageMarks, total: int) -> None:
    async def check() -> None:
        # An engine of this event loop's own: the server's async pool belongs to the server's loop.
        engine = make_async_engine(server.runtime.urls)
        try:
            async with engine.connect() as conn:
                for direction in (None, "outbound", "inbound"):
                    for sort in ("asc", "desc"):
                        kw = {"direction": direction, "sort": sort}
                        whole = await _page(conn, tenant, handle, None, limit=200, offset=0, **kw)
                        assert direction is not None or len(whole) == total
                        for limit in (1, 3, 7):
                            for offset in range(len(whole) + 1):
                                got = await _page(conn, tenant, handle, marks, limit=limit, offset=offset, **kw)
                                assert got == whole[offset : offset + limit], (direction, sort, limit, offset)
        finally:
            await engine.dispose()

    asyncio.run(check())


def test_a_page_read_from_a_mark_is_the_page_the_walk_reads(server: Server, tenant: Tenant) -> None:
    h = unique_number()
    for i in range(4):
        send(tenant, h, text=[f"s{i}-{j}" for j in range(6)])  # six messages with one acceptance time
        inbound(tenant, h, f"in{i}")
        send(tenant, h, text=f"one{i}")
    total = 4 * 8
    row = _chat_row(server, h, tenant.organization_id)
    assert row.message_count == total and row.newest_message_time is not None
    marks = PageMarks(spacing=SPACING)
    _every_page_matches(server, tenant, h, marks, total)
    # The older half's pages found the marks (each walk once); the newer half's used those known. The
    # outbound list (28 messages) has marks of its own.
    assert marks.known(row.id) >= total // 2 // SPACING - 1
    assert marks.known(row.id, "outbound") >= 28 // 2 // SPACING - 1


def test_a_message_older_than_the_chats_newest_is_counted_and_drops_its_marks(server: Server, tenant: Tenant) -> None:
    h = unique_number()
    send(tenant, h, text=[f"s{j}" for j in range(20)])
    first = _chat_row(server, h, tenant.organization_id)
    marks = PageMarks(spacing=SPACING)
    _every_page_matches(server, tenant, h, marks, 20)
    assert marks.known(first.id) >= 2

    # A device reports a message received before the newest one (a provider's own time, as Twilio's).
    older = InboundMessage(to=tenant.number, sender=h, received_at=first.newest_message_time - 5, text="late")
    run_unit(server.runtime.engine, record_inbound(older))
    after = _chat_row(server, h, tenant.organization_id)
    assert after.time_order_breaks == first.time_order_breaks + 1
    assert after.newest_message_time == first.newest_message_time  # the newest stays the newest
    # The stale marks are dropped, found again, and every page is the new list's.
    _every_page_matches(server, tenant, h, marks, 21)

    # A newer message goes to the end: no break, and the marks found after the late one stay.
    kept = marks.known(first.id)
    send(tenant, h, text="newest")
    assert _chat_row(server, h, tenant.organization_id).time_order_breaks == after.time_order_breaks
    _every_page_matches(server, tenant, h, marks, 22)
    assert marks.known(first.id) >= kept
