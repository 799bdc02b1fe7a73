"""Prefixed random identifiers (``msg_``, ``grp_``, ``wh_`` ...) and the clock the API speaks (epoch ms)."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits
# Random bytes → alphanumerics in C (bytes.translate) instead of a Python loop: each byte's low six bits
# pick a symbol, and the bytes whose low six bits are 62 or 63 are dropped, so every kept byte is one of the
# 62 symbols with equal probability (four byte values per symbol).
_TO_SYMBOL = bytes(_ALPHABET.encode()[b & 63] if (b & 63) < 62 else 0 for b in range(256))
_DROPPED = bytes(b for b in range(256) if (b & 63) >= 62)


def new_id(prefix: str, length: int = 20) -> str:
    """A prefixed id of ``length`` random alphanumerics (≈119 bits at 20): unguessable, URL-safe, regex-friendly.

    Minted several times per message (message, events, deliveries), so it is built without a Python loop
    per character: one ``secrets`` draw with a few spare bytes, mapped to symbols by a byte table.
    """
    out = secrets.token_bytes(length + 8).translate(_TO_SYMBOL, _DROPPED)
    while len(out) < length:  # more than eight of the bytes dropped: about once in three million ids at 20
        out += secrets.token_bytes(length).translate(_TO_SYMBOL, _DROPPED)
    return prefix + out[:length].decode()


def now_ms() -> int:
    """The current time as UTC epoch milliseconds, the unit of every timestamp the v2 API returns."""
    return time.time_ns() // 1_000_000
