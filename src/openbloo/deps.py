"""FastAPI dependencies shared by the routers: the caller (authenticated by the ASGI front) and the runtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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
