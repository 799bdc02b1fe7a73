"""FastAPI dependencies shared by the routers: the caller (authenticated by the ASGI front) and the runtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from openbloo.auth.context import AuthContext
from openbloo.errors import unauthorized
from openbloo.runtime import Runtime


def _auth(request: Request) -> AuthContext:
    ctx = request.scope.get("state", {}).get("auth")
    if ctx is None:  # only reachable if the app is mounted without its ASGI front
        raise unauthorized()
    return ctx


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


Auth = Annotated[AuthContext, Depends(_auth)]
Rt = Annotated[Runtime, Depends(_runtime)]

# The largest integer both databases store (BIGINT): bigger query values are a 400, not an overflow.
MAX_INT = 2**62

# Offset pagination (API.md §1.4): limit 1–200 (default 50), offset ≥ 0.
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=MAX_INT)]
EpochMs = Annotated[int | None, Query(ge=0, le=MAX_INT)]
