"""Webhook signatures, as Blooio documents them (API.md §6.3) and its receivers verify them.

``X-Blooio-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>``; the HMAC key is
the whole secret string's UTF-8 bytes (DECISIONS.md §14). Hand-written because the format is Blooio's own:
the Standard Webhooks library signs a different string with different headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """``whsec_`` + 32 random bytes, base64url without padding."""
    return SECRET_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(secret, t, body)}"


def verify(secret: str, header: str, body: bytes, *, tolerance: int = 300, now: int | None = None) -> bool:
    """Receiver-side check (used by openbloo's tests and handy for users): any ``v1`` entry may match."""
    fields = [part.strip().split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [v for k, v in fields if k == "t"]
    candidates = [v for k, v in fields if k == "v1"]
    if len(stamps) != 1 or not candidates or not stamps[0].isdigit():
        return False
    t = int(stamps[0])
    current = int(time.time()) if now is None else now
    if abs(current - t) > tolerance:
        return False
    expected = signature(secret, t, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
