"""Page marks (openbloo.chats.page_marks): a page read from a mark is the page the plain walk reads, on both
stores, for every offset, limit and order; a message stored before a chat's newest (a device's older time)
is counted on the chat's row and drops the chat's marks, which are then found again."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncConnection

from openbloo.addressing import parse_chat_id
from openbloo.chats.page_marks import PageMarks
from openbloo.chats.reads import list_messages
from openbloo.config import database_urls
from openbloo.db import models as m
from openbloo.db.engine import make_async_engine, make_sync_engine
from openbloo.db.migrate import upgrade
from openbloo.db.writer import run_unit
from openbloo.ids import now_ms
from openbloo.messages.inbound import record_inbound
from openbloo.transports.base import InboundMessage
from tests.conftest import Server, Tenant, unique_number
from tests.helpers import inbound, org_context, planned_send, send

SPACING = 4


async def _page(conn: AsyncConnection, org_id: str, handle: str, marks: PageMarks | None, **kw: Any) -> list[str]:
    _, items, _ = await list_messages(
        conn,
        org_id,
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
                        whole = await _page(conn, tenant.organization_id, handle, None, limit=200, offset=0, **kw)
                        assert direction is not None or len(whole) == total
                        for limit in (1, 3, 7):
                            for offset in range(len(whole) + 1):
                                got = await _page(
                                    conn, tenant.organization_id, handle, marks, limit=limit, offset=offset, **kw
                                )
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


ops = st.lists(
    st.one_of(
        # An inbound message with the device's time: newer than everything so far (None), or a time among the
        # sends (0 before the first, 1 the last's): stored out of the list's order, before marks found.
        st.tuples(st.just("in"), st.one_of(st.none(), st.floats(min_value=0, max_value=1))),
        # A page of the whole list or of one direction's, anywhere in it.
        st.tuples(
            st.just("read"),
            st.sampled_from(["asc", "desc"]),
            st.sampled_from([None, "inbound", "outbound"]),
            st.integers(min_value=1, max_value=5),
            st.one_of(st.floats(min_value=0, max_value=1), st.floats(min_value=0.1, max_value=0.45)),
        ),
    ),
    min_size=5,
    max_size=30,
)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops, sends=st.integers(min_value=8, max_value=20))
def test_pages_from_marks_match_the_walk_whatever_order_messages_arrive_in(
    empty_database: str, steps: list[tuple[Any, ...]], sends: int
) -> None:
    """Property: sends, inbound messages stamped before or after the chat's newest, and reads in any order;
    every page read with marks (three messages apart, kept across the reads) is the plain walk's page."""
    urls = database_urls(empty_database)
    upgrade(urls)
    engine = make_sync_engine(urls)
    number, chat = unique_number(), unique_number()  # the database outlives an example: each has its own
    try:
        ctx = org_context(engine, f"marks{number}", number)
        start = now_ms()
        for i in range(sends):
            run_unit(engine, planned_send(ctx, chat, f"s{i}"))
            time.sleep(0.002)  # distinct times: an older message then lands between sends, not after their tie
        clock = sent = now_ms()
        marks = PageMarks(spacing=3)

        async def read(sort: str, direction: str | None, limit: int, at: float) -> None:
            aengine = make_async_engine(urls)
            try:
                async with aengine.connect() as conn:
                    kw = {"direction": direction, "sort": sort}
                    whole = await _page(conn, ctx.organization_id, chat, None, limit=500, offset=0, **kw)
                    offset = int(at * len(whole))
                    got = await _page(conn, ctx.organization_id, chat, marks, limit=limit, offset=offset, **kw)
                    assert got == whole[offset : offset + limit]
            finally:
                await aengine.dispose()

        asyncio.run(read("asc", None, 2, 0.4))  # marks of the older half, before anything moves
        for step in steps:
            if step[0] == "in":
                clock += 10
                at = clock if step[1] is None else start - 1 + int(step[1] * (sent - start + 1))
                message = InboundMessage(to=number, sender=chat, received_at=at, text="in")
                run_unit(engine, record_inbound(message))
            else:
                asyncio.run(read(*step[1:]))
    finally:
        engine.dispose()
