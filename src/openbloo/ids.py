"""Prefixed random identifiers (``msg_``, ``grp_``, ``wh_`` ...) and the clock the API speaks (epoch ms)."""

from __future__ import annotations

import os
import secrets
import string
import threading
import time

_ALPHABET = string.ascii_letters + string.digits
# Random bytes → base62 characters in one C call: 248 = 4 × 62, so bytes below 248 map uniformly and the
# rest are dropped (``translate``'s delete argument) and drawn again.
_BYTE_TO_CHAR = bytes((_ALPHABET[i % 62] if i < 248 else "-").encode("ascii")[0] for i in range(256))
_REJECTED = bytes(range(248, 256))
# In ASCII order, so that ordered ids sort (bytewise, as database indexes compare them) by their time.
_SORTED_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_TIME_CHARS = 8  # 62**8 ms: until the year 8888
ORDERED_RANDOM_CHARS = 12  # ≈71 bits


_POOL_BYTES = 4096


class _Pool(threading.local):
    """Random base62 characters drawn ahead, per thread: one ``getrandom`` call per ~200 ids instead of one
    per id. The call released the GIL, and the thread that minted an id (the writer, several ids per send)
    then waited for it to come back, often for another thread's whole switch interval."""

    chars = ""
    pos = 0


_pool = _Pool()


def _forget_pool() -> None:
    _pool.chars, _pool.pos = "", 0  # a forked child draws its own: never the parent's next ids


os.register_at_fork(after_in_child=_forget_pool)


def _random_chars(n: int) -> str:
    pool = _pool
    start = pool.pos
    end = start + n
    if end > len(pool.chars):
        drawn = ""
        while len(drawn) < n:
            drawn += secrets.token_bytes(max(_POOL_BYTES, 2 * n)).translate(_BYTE_TO_CHAR, _REJECTED).decode("ascii")
        pool.chars, start, end = drawn, 0, n
    pool.pos = end
    return pool.chars[start:end]


def new_id(prefix: str, length: int = 20, *, ordered: bool = False) -> str:
    """A prefixed id of ``length`` alphanumerics: unguessable, URL-safe, regex-friendly.

    Random (≈119 bits at 20) by default. ``ordered`` ids, for the rows every send writes (messages, events,
    webhook deliveries), start with the time in milliseconds and end with 12 random characters (≈71 bits):
    still unguessable, but each new id lands at the end of the indexes that hold it instead of at a random
    page. With random ids every send dirtied a page of each such index (five per message), and the commit,
    which writes the dirty pages, was the biggest part of the writer's time.
    """
    if not ordered:
        return prefix + _random_chars(length)
    return prefix + _time_chars(time.time_ns() // 1_000_000) + _random_chars(max(1, length - _TIME_CHARS))


_last_time: tuple[int, str] = (-1, "")


def _time_chars(ms: int) -> str:
    global _last_time
    last_ms, chars = _last_time
    if ms == last_ms:  # many ids per millisecond on the send path: format each millisecond once
        return chars
    t, out = ms, []
    for _ in range(_TIME_CHARS):
        t, r = divmod(t, 62)
        out.append(_SORTED_ALPHABET[r])
    chars = "".join(reversed(out))
    _last_time = (ms, chars)
    return chars


def now_ms() -> int:
    """The current time as UTC epoch milliseconds, the unit of every timestamp the v2 API returns."""
    return time.time_ns() // 1_000_000
