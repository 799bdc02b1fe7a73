"""API keys and organizations: minting, hashing, listing, revoking (units of work for the writer).

Keys are ``bl_live_`` + 32 random base62 characters. Only their SHA-256 is stored: a fast hash is the
right tool for a random 190-bit secret (nothing to brute-force), and it keeps authentication at ~1 µs.
``prefix`` (``bl_live_`` + 6 characters) is what lists and revocation show; the plaintext is shown once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from openbloo.db import models as m
from openbloo.db.batch import Batch
from openbloo.errors import ApiError
from openbloo.ids import new_id, now_ms

KEY_PREFIX = "bl_live_"
DISPLAY_CHARS = 6


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + DISPLAY_CHARS]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    api_key: str
    key_id: str
    prefix: str
    organization_id: str
    organization_name: str
    name: str | None
    created_at: int


def get_or_create_org(batch: Batch, name: str, country_code: str | None = "US") -> dict[str, Any]:
    row = batch.conn.execute(select(m.organizations).where(m.organizations.c.name == name)).mappings().first()
    if row is not None:
        return dict(row)
    org = {"id": new_id("org_"), "name": name, "country_code": country_code, "created_at": now_ms()}
    batch.conn.execute(m.organizations.insert().values(**org))
    return org


def create_key(org_name: str, name: str | None = None) -> Any:
    """Unit of work: create the organization if needed, then a key in it."""

    def unit(batch: Batch) -> CreatedKey:
        org = get_or_create_org(batch, org_name)
        key = KEY_PREFIX + new_id("", 32)
        row = {
            "id": new_id("key_"),
            "organization_id": org["id"],
            "name": name,
            "key_hash": hash_key(key),
            "prefix": display_prefix(key),
            "metadata": {},
            "created_at": now_ms(),
        }
        batch.conn.execute(m.api_keys.insert().values(**row))
        return CreatedKey(key, row["id"], row["prefix"], org["id"], org["name"], name, row["created_at"])

    return unit


def list_keys(org_name: str | None) -> Any:
    def unit(batch: Batch) -> list[dict[str, Any]]:
        stmt = (
            select(
                m.api_keys.c.id,
                m.api_keys.c.prefix,
                m.api_keys.c.name,
                m.api_keys.c.created_at,
                m.api_keys.c.revoked_at,
                m.organizations.c.name.label("organization"),
                m.organizations.c.id.label("organization_id"),
            )
            .join(m.organizations, m.organizations.c.id == m.api_keys.c.organization_id)
            .order_by(m.organizations.c.name, m.api_keys.c.created_at)
        )
        if org_name is not None:
            stmt = stmt.where(m.organizations.c.name == org_name)
        return [dict(r) for r in batch.conn.execute(stmt).mappings()]

    return unit


def revoke_key(key_or_prefix: str) -> Any:
    """Unit of work: revoke by full key or by its display prefix. Returns the revoked key's prefix."""

    def unit(batch: Batch) -> str:
        t = m.api_keys
        if key_or_prefix.startswith(KEY_PREFIX) and len(key_or_prefix) > len(KEY_PREFIX) + DISPLAY_CHARS:
            cond = t.c.key_hash == hash_key(key_or_prefix)
        else:
            cond = t.c.prefix == key_or_prefix
        row = batch.conn.execute(select(t.c.id, t.c.prefix, t.c.revoked_at).where(cond)).first()
        if row is None:
            raise ApiError(404, "not_found", f"No API key matches {key_or_prefix!r}")
        if row.revoked_at is None:
            batch.conn.execute(update(t).where(t.c.id == row.id).values(revoked_at=now_ms()))
        return str(row.prefix)

    return unit
