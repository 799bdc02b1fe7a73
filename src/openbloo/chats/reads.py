"""Queries behind the conversation reads (API.md §3.3, §3.5, §5.1–5.2).

Lists sort by time and break ties by acceptance order (``seq`` / ``created_at``); they walk indexes that
match their filter and order, and take totals from the maintained counters where the filters allow.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from openbloo.addressing import ChatAddress
from openbloo.chats.page_marks import PageMarks, after_key
from openbloo.db import models as m
from openbloo.errors import not_found

_chat, _ct, _grp, _gm, _msg, _num = m.chats, m.contacts, m.groups, m.group_members, m.messages, m.numbers
_org = m.organizations


def _member_count() -> Any:
    return (
        select(func.count())
        .where(_gm.c.group_id == _chat.c.group_id, _gm.c.removed_at.is_(None))
        .scalar_subquery()
        .label("member_count")
    )


def _chat_select() -> Any:
    return (
        select(
            _chat,
            _ct.c.id.label("ct_id"),
            _ct.c.identifier.label("ct_identifier"),
            _ct.c.name.label("ct_name"),
            _grp.c.name.label("group_name"),
            _member_count(),
        )
        .outerjoin(_ct, _ct.c.id == _chat.c.contact_id)
        .outerjoin(_grp, _grp.c.id == _chat.c.group_id)
    )


def chat_view(row: Any, *, with_first: bool = False) -> dict[str, Any]:
    is_group = row.type == "group"
    view: dict[str, Any] = {
        "id": row.chat_key,
        "type": row.type,
        "is_group": is_group,
        "contact": (
            {"contact_id": row.ct_id, "identifier": row.ct_identifier, "name": row.ct_name}
            if row.ct_id is not None
            else None
        ),
        "group_id": row.group_id,
        "group_name": row.group_name if is_group else None,
        "member_count": int(row.member_count or 0) if is_group else None,
        "message_count": int(row.message_count),
        "inbound_count": int(row.inbound_count),
        "outbound_count": int(row.outbound_count),
        "last_message_time": row.last_message_time,
        "last_inbound_time": row.last_inbound_time,
        "last_outbound_time": row.last_outbound_time,
        "last_message": (
            {
                "message_id": row.last_message_id,
                "text": row.last_message_text,
                "direction": row.last_message_direction,
                "time_sent": row.last_message_time,
            }
            if row.last_message_id is not None
            else None
        ),
        "background_id": None,
        "background_url": None,
    }
    if with_first:
        view["first_message_time"] = row.first_message_time
    return view


async def list_chats(
    conn: AsyncConnection, org_id: str, *, limit: int, offset: int, q: str | None, sort: str
) -> tuple[list[dict[str, Any]], int]:
    cond = [_chat.c.organization_id == org_id]
    if q:
        like = f"%{q.lower()}%"
        cond.append(
            or_(
                func.lower(_chat.c.chat_key).like(like),
                func.lower(_ct.c.name).like(like),
                func.lower(_grp.c.name).like(like),
            )
        )
    if sort == "oldest":
        order = (_chat.c.last_message_time.asc(), _chat.c.created_at.asc(), _chat.c.id.asc())
    else:
        order = (_chat.c.last_message_time.desc(), _chat.c.created_at.desc(), _chat.c.id.desc())
    rows = await conn.execute(_chat_select().where(*cond).order_by(*order).limit(limit).offset(offset))
    if q:
        count = select(func.count()).select_from(_chat)
        count = count.outerjoin(_ct, _ct.c.id == _chat.c.contact_id).outerjoin(_grp, _grp.c.id == _chat.c.group_id)
        total = (await conn.execute(count.where(*cond))).scalar_one()
    else:  # the maintained counter (chats/store.py): counting every chat made long lists slow
        total = (await conn.execute(select(_org.c.chat_count).where(_org.c.id == org_id))).scalar_one()
    return [chat_view(r) for r in rows], int(total)


async def find_chats(conn: AsyncConnection, org_id: str, address: ChatAddress) -> list[Any]:
    """The stored chats an address names, most recent first (a comma list may match one per number)."""
    stmt = _chat_select().where(_chat.c.organization_id == org_id)
    if address.kind == "multi":
        stmt = stmt.where(_grp.c.participants_key == address.key, _grp.c.auto_key.is_not(None))
    else:
        stmt = stmt.where(_chat.c.chat_key == address.key)
    rows = await conn.execute(stmt.order_by(_chat.c.last_message_time.desc()))
    return list(rows)


async def get_chat(conn: AsyncConnection, org_id: str, address: ChatAddress) -> dict[str, Any]:
    rows = await find_chats(conn, org_id, address)
    if not rows:
        raise not_found(f"Chat {address.key} not found")
    return chat_view(rows[0], with_first=True)


async def list_messages(
    conn: AsyncConnection,
    org_id: str,
    address: ChatAddress,
    *,
    limit: int,
    offset: int,
    sort: str,
    direction: str | None,
    since: int | None,
    until: int | None,
    marks: PageMarks | None = None,
) -> tuple[str, list[dict[str, Any]], int]:
    chats = await find_chats(conn, org_id, address)
    if not chats:
        raise not_found(f"Chat {address.key} not found")
    chat_ids = [c.id for c in chats]
    cond = [_msg.c.chat_id.in_(chat_ids) if len(chat_ids) > 1 else _msg.c.chat_id == chat_ids[0]]
    if direction:
        cond.append(_msg.c.direction == direction)
    if since is not None:
        cond.append(_msg.c.time_sent > since)
    if until is not None:
        cond.append(_msg.c.time_sent < until)
    counted = since is None and until is None  # the maintained counters answer without touching the messages
    if counted:
        field = {"inbound": "inbound_count", "outbound": "outbound_count"}.get(direction or "", "message_count")
        total = sum(int(getattr(c, field)) for c in chats)
    else:
        total = int((await conn.execute(select(func.count()).select_from(_msg).where(and_(*cond)))).scalar_one())
    external = chats[0].chat_key
    if offset >= total and counted:
        return external, [], total
    ascending = sort == "asc"
    if counted:
        # The page as positions [lo, hi) of the list oldest first (the total says where it ends). OFFSET walks
        # the index from where the read starts, so the page is read from the nearer end (the order reversed,
        # and put back below): the deepest page then costs what the first does, and the middle one walks the
        # most, unless a mark shortens its walk.
        lo, hi = (offset, min(total, offset + limit)) if ascending else (max(0, total - offset - limit), total - offset)
        limit = hi - lo
        ascending, offset = (True, lo) if lo <= total - hi else (False, total - hi)
        chat = chats[0]
        # Marks are of one chat's list (or its messages of one direction); a chat row without its newest time
        # predates the count of breaks they rely on.
        if marks is not None and len(chats) == 1 and chat.newest_message_time is not None and offset >= marks.spacing:
            # Marks missing up to the page are found when that walk is no longer than the page's own (the older
            # half of the list); a page nearer the newest end uses those already known.
            breaks = int(chat.time_order_breaks)
            found = await marks.mark_before(conn, chat.id, direction, breaks, lo, budget=offset)
            if found is not None and lo - found[0] < offset:
                mark_position, (mark_time, mark_seq) = found
                cond.append(after_key(mark_time, mark_seq))
                ascending, offset = True, lo - mark_position
    up, down = (_msg.c.time_sent.asc(), _msg.c.seq.asc()), (_msg.c.time_sent.desc(), _msg.c.seq.desc())
    order = up if ascending else down
    # Deferred join: the page's keys come from the (chat_id, time_sent, seq) index alone, and only the page's
    # rows are read from the table. With OFFSET over whole rows, a deep page read every skipped row.
    page = select(_msg.c.seq).where(and_(*cond)).order_by(*order).limit(limit).offset(offset).subquery()
    rows = list(
        await conn.execute(
            select(_msg, _num.c.phone_number.label("internal_id"))
            .join(page, page.c.seq == _msg.c.seq)
            .outerjoin(_num, _num.c.id == _msg.c.number_id)
            .order_by(*order)
        )
    )
    if ascending != (sort == "asc"):
        rows.reverse()
    items = [list_item(r, external) for r in rows]
    return external, items, total


def list_item(row: Any, external_id: str) -> dict[str, Any]:
    return {
        "message_id": row.id,
        "external_id": external_id,
        "direction": row.direction,
        "internal_id": row.internal_id,
        "sender": row.sender,
        "text": row.text,
        "attachments": row.attachments or [],
        "reactions": [],
        "time_sent": row.time_sent,
        "time_delivered": row.time_delivered,
        "time_read": row.time_read,
        "status": row.status,
        "protocol": row.protocol,
        "error": row.error,
        "reply_to": row.reply_to,
        "effect": row.effect,
        "metadata": row.metadata,
    }
