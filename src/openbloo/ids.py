"""Prefixed random identifiers (``msg_``, ``grp_``, ``wh_`` ...) and the clock the API speaks (epoch ms)."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 20) -> str:
    """A prefixed id of ``length`` random alphanumerics (≈119 bits at 20): unguessable, URL-safe, regex-friendly.

    Base62 of one ``secrets`` draw rather than ``secrets.choice`` per character: ids are minted on the send
    path, and this is several times cheaper.
    """
    n = int.from_bytes(secrets.token_bytes(length), "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return prefix + "".join(out)


def now_ms() -> int:
    """The current time as UTC epoch milliseconds, the unit of every timestamp the v2 API returns."""
    return time.time_ns() // 1_000_000
