"""``Idempotency-Key`` on the send (DECISIONS.md §3), inside the send's unit of work.

A key is scoped to the organization and kept ``OPENBLOO_IDEMPOTENCY_TTL_HOURS``. The first request writes its
response with the messages (one transaction); a repeat of the same request (chat id + body) gets that
response with 200; the same key with another request is 409. Racing repeats share the writer, so the second
one finds the first's record in the same batch (or, across processes, fails the unique key and is re-run).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select

from openbloo.chats.store import ORDER_IDEMPOTENCY
from openbloo.db import models as m
from openbloo.db.batch import ABSENT, Batch
from openbloo.db.direct import Prepared
from openbloo.errors import ApiError, bad_request


@dataclass(frozen=True, slots=True)
class Idempotency:
    key: str
    request_hash: str
    ttl_ms: int

    @staticmethod
    def of(key: str | None, chat_id: str, body: bytes, ttl_ms: int) -> Idempotency | None:
        if key is None:
            return None
        if not key or len(key) > 255:
            raise bad_request("'Idempotency-Key' must be 1 to 255 characters", code="invalid_idempotency_key")
        digest = hashlib.sha256(chat_id.encode() + b"\n" + body).hexdigest()
        return Idempotency(key, digest, ttl_ms)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    status: int
    body: bytes
    message_ids: tuple[str, ...] = ()


_IDEMPOTENCY_RECORD = select(
    m.idempotency_keys.c.request_hash, m.idempotency_keys.c.response_body, m.idempotency_keys.c.expires_at
).where(m.idempotency_keys.c.organization_id == bindparam("org"), m.idempotency_keys.c.key == bindparam("key"))


def idempotency_key(org_id: str, key: str) -> tuple[str, str, str]:
    """The identity-map key of a record: (request hash, response, expires at) as stored or written in this
    batch, or ``ABSENT`` when the batch read that there is none (messages.lookups)."""
    return ("idem", org_id, key)


def replay(batch: Batch, org_id: str, idem: Idempotency, now: int) -> SendOutcome | None:
    key = idempotency_key(org_id, idem.key)
    found = batch.recall(key)
    if found is ABSENT:
        return None
    if found is None:
        found = batch.first(_IDEMPOTENCY_RECORD, {"org": org_id, "key": idem.key})
        if found is None:
            return None
    request_hash, body, expires_at = found
    if expires_at <= now:
        t = m.idempotency_keys
        batch.conn.execute(delete(t).where(t.c.organization_id == org_id, t.c.key == idem.key))
        batch.remember(key, ABSENT)
        return None
    if request_hash != idem.request_hash:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request",
        )
    return SendOutcome(200, body.encode() if isinstance(body, str) else body)


_RECORD = Prepared.insert(
    m.idempotency_keys,
    ("organization_id", "key", "request_hash", "response_status", "response_body", "created_at", "expires_at"),
)


def remember_response(batch: Batch, org_id: str, idem: Idempotency, body: bytes, now: int) -> None:
    text = body.decode()
    expires = now + idem.ttl_ms
    batch.add(_RECORD, (org_id, idem.key, idem.request_hash, 202, text, now, expires), ORDER_IDEMPOTENCY)
    batch.remember(idempotency_key(org_id, idem.key), (idem.request_hash, text, expires))
