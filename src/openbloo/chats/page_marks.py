"""Page marks: where every ``spacing``-th message of a long chat's list is, so that a page deep in it is a short
walk from the mark before it.

``GET /chats/{id}/messages`` pages by offset, and an offset is a walk of the chat's (chat, time, seq) index up
to it: the middle page of a 100,000-message chat walked 50,000 entries on every request (pages past the
middle are read from the other end, so the middle is the longest walk). A position stored with each message
would make an offset a range, but it costs every send a second index entry in the chat and only holds while
messages are stored in time order (docs/benchmarks.md, twelfth round). Marks cost the send path nothing
measurable: the API process finds them by walking once (one statement) and remembers them per chat; a later
page starts at the mark before it, so paging through a long history no longer walks further for every deeper
page.

A mark is a message's sort key (time sent, seq) and its position in the list, oldest first. Messages are
never deleted, and a new message goes to the end of the list unless it is not newer than the chat's newest;
each such message adds one to the chat's ``time_order_breaks`` in the same UPDATE that counts it (under the
row's lock, openbloo.chats.store.chat_time_order). Marks are kept with the count they were found under, and
a chat row read with another count drops them. A list filtered by direction has marks of its own (its
entries are not in the index, so its walk also reads each message's row: marks spare it most). Bounded:
``max_chats`` lists (least recently used out) and ``max_marks`` marks a list (deeper pages walk from the last
one).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, bindparam, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from openbloo.db import models as m

_msg = m.messages


def after_key(time_sent: Any, seq: Any, messages: Any = _msg) -> ColumnElement[bool]:
    """Messages at or after the sort key (``time_sent``, ``seq``) in list order. Written as a range on the
    index's time column and a tie test: a row value comparison is not used for an index range by every planner."""
    t = messages.c.time_sent
    return and_(t >= time_sent, or_(t > time_sent, messages.c.seq >= seq))


def _marks_after(of_direction: bool) -> Any:
    """Up to ``b_count`` marks, each ``b_skip`` messages after the one before, the first after the key
    (``b_t``, ``b_seq``): the last mark known, or a key before every message; ``of_direction``: counting only
    the messages of direction ``b_direction`` (a list filtered by it). One statement (a recursive CTE),
    where a statement a mark cost the first deep page of a 100,000-message chat five times its plain walk;
    each step walks the (chat, time, seq) index from the mark before, and together they walk as far as an
    OFFSET to the last one would."""
    marks = select(
        literal(0, BigInteger).label("n"),
        bindparam("b_t", type_=BigInteger).label("t"),
        bindparam("b_seq", type_=BigInteger).label("s"),
    ).cte("marks", recursive=True)
    x = _msg.alias("x")
    which = [x.c.chat_id == bindparam("b_chat"), after_key(marks.c.t, marks.c.s, x)]
    if of_direction:
        which.append(x.c.direction == bindparam("b_direction"))
    following = (
        select(x.c.seq)
        .where(*which)
        .order_by(x.c.time_sent, x.c.seq)
        .limit(1)
        .offset(bindparam("b_skip"))
        .scalar_subquery()
    )
    step = (
        select(marks.c.n + 1, _msg.c.time_sent, _msg.c.seq)
        .select_from(marks.join(_msg, _msg.c.seq == following))
        .where(marks.c.n < bindparam("b_count"))
    )
    found = marks.union_all(step)
    return select(found.c.t, found.c.s).where(found.c.n > 0).order_by(found.c.n)


_MARKS_AFTER = {False: _marks_after(False), True: _marks_after(True)}
_BEFORE_EVERY_MESSAGE = (-(2**62), -(2**62))


class _ChatMarks:
    """One chat's marks: mark ``i`` is the message at position ``(i + 1) * spacing``. Two arrays of 8-byte
    integers, not a list of tuples (about 120 bytes a mark): the cache's bound is then a few MB."""

    __slots__ = ("breaks", "seqs", "times")

    def __init__(self, breaks: int, times: array[int] | None = None, seqs: array[int] | None = None) -> None:
        self.breaks = breaks  # the chat's time_order_breaks the marks were found under
        self.times = array("q") if times is None else times
        self.seqs = array("q") if seqs is None else seqs

    def __len__(self) -> int:
        return len(self.times)

    def key(self, i: int) -> tuple[int, int]:
        return self.times[i], self.seqs[i]

    def extended(self, keys: Iterable[tuple[int, int]]) -> _ChatMarks:
        """These marks and ``keys`` after them, as a new object: another request may be reading this one."""
        longer = _ChatMarks(self.breaks, array("q", self.times), array("q", self.seqs))
        for t, seq in keys:
            longer.times.append(t)
            longer.seqs.append(seq)
        return longer


class PageMarks:
    def __init__(self, spacing: int = 1000, max_chats: int = 256, max_marks: int = 1024) -> None:
        self.spacing = spacing
        self.max_chats = max_chats
        self.max_marks = max_marks
        self._chats: OrderedDict[tuple[str, str | None], _ChatMarks] = OrderedDict()

    def known(self, chat_id: str, direction: str | None = None) -> int:
        """How many marks of the chat's list (of ``direction``) are remembered (for tests and diagnostics)."""
        found = self._chats.get((chat_id, direction))
        return len(found) if found else 0

    async def mark_before(
        self,
        conn: AsyncConnection,
        chat_id: str,
        direction: str | None,
        breaks: int,
        position: int,
        *,
        budget: int,
    ) -> tuple[int, tuple[int, int]] | None:
        """The last mark at or before ``position`` (0 = the oldest message) of the chat's list (of its messages
        of ``direction``, if given): its position and key, or None if there is none to start from. ``breaks``:
        the chat row's ``time_order_breaks``, as just read (a message stored out of order in the chat may move
        a filtered list's marks too, so the one count holds for the three lists). The marks missing up to
        ``position`` are found now (a walk from the last one known) if that walk is at most ``budget``
        messages: the walk the page would take without them."""
        wanted = min(position // self.spacing, self.max_marks)
        if wanted == 0:
            return None
        list_key = (chat_id, direction)
        marks = self._chats.get(list_key)
        if marks is None or marks.breaks != breaks:
            marks = _ChatMarks(breaks)
        known = len(marks)
        if known < wanted and position - known * self.spacing <= budget:
            last = marks.key(known - 1) if known else None
            found = await self._walk(conn, chat_id, direction, last, wanted - known)
            # Another request of this process may have found some meanwhile (an await above): keep one list.
            current = self._chats.get(list_key)
            if current is not None and current.breaks == breaks and len(current) >= known + len(found):
                marks = current
            else:
                marks = marks.extended(found)
        self._remember(list_key, marks)
        have = min(wanted, len(marks))
        if have == 0:
            return None
        return have * self.spacing, marks.key(have - 1)

    async def _walk(
        self, conn: AsyncConnection, chat_id: str, direction: str | None, last: tuple[int, int] | None, count: int
    ) -> list[tuple[int, int]]:
        """Up to ``count`` more marks after ``last`` (None: from the start), each ``spacing`` messages on."""
        t, seq = last or _BEFORE_EVERY_MESSAGE
        params = {"b_chat": chat_id, "b_t": t, "b_seq": seq, "b_skip": self.spacing, "b_count": count}
        if direction is not None:
            params["b_direction"] = direction
        rows = await conn.execute(_MARKS_AFTER[direction is not None], params)
        return [(int(t), int(seq)) for t, seq in rows]

    def _remember(self, list_key: tuple[str, str | None], marks: _ChatMarks) -> None:
        self._chats[list_key] = marks
        self._chats.move_to_end(list_key)
        while len(self._chats) > self.max_chats:
            self._chats.popitem(last=False)
