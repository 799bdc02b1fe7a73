"""Who is calling: API key → organization and number pool, cached in process memory for a few seconds.

The cache is what keeps authentication off the database on the hot path. Its expiry is the bound on how
long a revoked key (or a number deactivated with the CLI, possibly from another process) keeps working.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from openbloo.auth.keys import hash_key
from openbloo.db import models as m
from openbloo.errors import unauthorized


@dataclass(frozen=True, slots=True)
class PoolNumber:
    """A sender number as the send planner sees it (configuration only; counters are read in-transaction)."""

    id: str  # the allocation id, alloc_…
    phone_number: str
    transport: str
    plan_kind: str | None
    is_active: bool
    daily_limit: int | None
    new_conversation_cap: int | None
    last_active_at: int | None
    transport_config: dict[str, Any] | None
    # The device's last reported details (numbers.device_info), e.g. {"private_api": false}.
    device_info: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AuthContext:
    api_key: str
    key_id: str
    key_name: str | None
    key_metadata: dict[str, Any]
    organization_id: str
    organization_name: str
    country_code: str | None
    organization_created_at: int
    pool: tuple[PoolNumber, ...]

    def number_by_phone(self, phone: str) -> PoolNumber | None:
        for n in self.pool:
            if n.phone_number == phone:
                return n
        return None

    def number_by_id(self, number_id: str) -> PoolNumber | None:
        for n in self.pool:
            if n.id == number_id:
                return n
        return None

    @property
    def region(self) -> str:
        return self.country_code or "US"


def pool_query(organization_id: str, key_id: str) -> Any:
    """The numbers a key may use: its organization's, minus those restricted to other keys."""
    n, nk = m.numbers, m.number_api_keys
    restricted = exists().where(nk.c.number_id == n.c.id)
    mine = exists().where(and_(nk.c.number_id == n.c.id, nk.c.api_key_id == key_id))
    return (
        select(n).where(n.c.organization_id == organization_id, or_(~restricted, mine)).order_by(n.c.created_at, n.c.id)
    )


def pool_number(row: Any) -> PoolNumber:
    return PoolNumber(
        id=row.id,
        phone_number=row.phone_number,
        transport=row.transport,
        plan_kind=row.plan_kind,
        is_active=bool(row.is_active),
        daily_limit=row.daily_limit or None,
        new_conversation_cap=row.new_conversation_cap or None,
        last_active_at=row.last_active_at,
        transport_config=row.transport_config,
        device_info=row.device_info,
    )


def bearer_token(authorization: str) -> str | None:
    """The key of a well-formed ``Bearer <api key>`` header value, or None."""
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


class KeyResolver:
    def __init__(self, engine: AsyncEngine, ttl_seconds: float = 3.0) -> None:
        self.engine = engine
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[float, AuthContext | None]] = {}
        # One load per key at a time: when an entry expires under load, the requests that find it stale
        # together share one query instead of each running their own.
        self._loading: dict[str, asyncio.Future[AuthContext | None]] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    async def resolve_header(self, authorization: str | None) -> AuthContext:
        if not authorization:
            raise unauthorized("Missing Authorization header: expected 'Bearer <api key>'")
        token = bearer_token(authorization)
        if token is None:
            raise unauthorized("Malformed Authorization header: expected 'Bearer <api key>'")
        return await self.resolve(token)

    def cached(self, authorization: str) -> AuthContext | None:
        """The caller of a well-formed ``Authorization`` header, if its key is in the cache and fresh; else None
        (the caller then goes the way that loads it: :meth:`resolve_header`)."""
        token = bearer_token(authorization)
        if token is None:
            return None
        hit = self._cache.get(hash_key(token))
        if hit is None or hit[0] <= time.monotonic():
            return None
        return hit[1]

    async def resolve(self, key: str) -> AuthContext:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            ctx = hit[1]
        else:
            ctx = await self._load_once(key, digest, now)
        if ctx is None:
            raise unauthorized("Invalid or revoked API key")
        return ctx

    async def _load_once(self, key: str, digest: str, now: float) -> AuthContext | None:
        pending = self._loading.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[AuthContext | None] = asyncio.get_running_loop().create_future()
        self._loading[digest] = fut
        try:
            ctx = await self._load(key, digest)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it, nobody else needs to see it logged
            raise
        finally:
            self._loading.pop(digest, None)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self.ttl, ctx)
        fut.set_result(ctx)
        return ctx

    async def _load(self, key: str, digest: str) -> AuthContext | None:
        k, o = m.api_keys, m.organizations
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        k.c.id,
                        k.c.name,
                        k.c.metadata,
                        k.c.revoked_at,
                        o.c.id.label("org_id"),
                        o.c.name.label("org_name"),
                        o.c.country_code,
                        o.c.created_at.label("org_created_at"),
                    )
                    .join(o, o.c.id == k.c.organization_id)
                    .where(k.c.key_hash == digest)
                )
            ).first()
            if row is None or row.revoked_at is not None:
                return None
            pool = [pool_number(r) for r in await conn.execute(pool_query(row.org_id, row.id))]
        return AuthContext(
            api_key=key,
            key_id=row.id,
            key_name=row.name,
            key_metadata=row.metadata or {},
            organization_id=row.org_id,
            organization_name=row.org_name,
            country_code=row.country_code,
            organization_created_at=row.org_created_at,
            pool=tuple(pool),
        )
