"""The application: FastAPI for the v2 surface, behind a thin ASGI front that authenticates every
``/v2/api`` request once and sends ``POST /chats/{chatId}/messages`` down the lean send lane.

Why two layers: the send route is the hot path, and FastAPI's per-request machinery (dependency
injection, Pydantic validation and serialization) costs more there than the durable write itself
(DESIGN.md "Performance by design"). Everything else keeps FastAPI's conveniences. Both layers raise
the same :class:`~openbloo.errors.ApiError` and answer with the same envelope.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from openbloo import __version__
from openbloo.asgi import Receive, Scope, Send, header, respond_error
from openbloo.auth.context import AuthContext
from openbloo.errors import GENERIC_CODES, ApiError
from openbloo.messages.idempotency import SendOutcome
from openbloo.messages.send_lane import INTERNAL_ERROR
from openbloo.runtime import Runtime

if TYPE_CHECKING:
    from openbloo.workers import WorkerProcess

log = logging.getLogger("openbloo.http")

PREFIX = "/v2/api"
PUBLIC_PATHS = frozenset(
    {f"{PREFIX}/openapi.json", f"{PREFIX}/docs", f"{PREFIX}/docs/oauth2-redirect", f"{PREFIX}/redoc"}
)
# Matched against the raw (still percent-encoded) path, so an encoded "/" inside a chat id cannot split it.
SEND_PATH = re.compile(rb"^/v2/api/chats/([^/]+)/messages/?$")


@functools.lru_cache(maxsize=16384)
def _chat_id_of(raw: bytes) -> str:
    # Percent-decoding the chat id (``%2B1555…``) was 3 % of the send path; a sender's chats repeat.
    return unquote(raw.decode("latin-1"))


def _error_response(error: ApiError) -> Response:
    return JSONResponse(error.envelope(), status_code=error.status, headers=error.response_headers())


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            return _error_response(ApiError(400, "invalid_request", "Request body is not valid JSON"))
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_name(tuple(first.get("loc", ())))
        message = f"Invalid value for '{field}': {first.get('msg', 'invalid')}"
        return _error_response(ApiError(400, "invalid_request", message))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            message = f"No route for {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        code = GENERIC_CODES.get(exc.status_code, "error")
        error = ApiError(exc.status_code, code, message, headers=dict(exc.headers or {}))
        return _error_response(error)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return _error_response(ApiError(500, "internal_error", "Internal server error"))


def build_api(runtime: Runtime, worker_process: WorkerProcess | None = None) -> FastAPI:
    from openbloo.account.router import router as account_router
    from openbloo.chats.router import router as chats_router
    from openbloo.devices.callbacks import router as callbacks_router
    from openbloo.messages.inbound_router import router as simulator_router
    from openbloo.messages.router import router as messages_router
    from openbloo.webhooks.router import router as webhooks_router

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from openbloo.workers import Workers

        runtime.start()
        workers = Workers(runtime) if runtime.run_workers else None
        if workers is not None:
            await workers.start()
        # serve's worker process lives as long as the application: started and stopped here, not around
        # uvicorn.run, which on SIGTERM re-raises the signal once shut down and so ends serve before any code
        # after it runs (the worker then only died with it, by its parent-death SIGKILL, mid-work).
        if worker_process is not None:
            worker_process.start()
        try:
            yield
        finally:
            if workers is not None:
                await workers.stop()
            if worker_process is not None:
                await asyncio.to_thread(worker_process.stop)
            await runtime.close()

    api = FastAPI(
        title="openbloo",
        version=__version__,
        description="A self-hosted gateway that speaks Blooio's v2 REST API.",
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=f"{PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    api.state.runtime = runtime
    install_error_handlers(api)
    api.include_router(account_router, prefix=PREFIX)
    api.include_router(messages_router, prefix=PREFIX)
    api.include_router(chats_router, prefix=PREFIX)
    api.include_router(simulator_router, prefix=PREFIX)
    api.include_router(webhooks_router, prefix=PREFIX)
    # Device callbacks live outside /v2/api: the ASGI front does not ask them for an API key.
    api.include_router(callbacks_router)

    _install_openapi(api)

    @api.get("/", include_in_schema=False)
    async def root() -> dict[str, Any]:
        return {
            "name": "openbloo",
            "version": __version__,
            "api": PREFIX,
            "openapi": f"{PREFIX}/openapi.json",
        }

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    return api


API_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message", "status", "code"],
    "properties": {
        "error": {"type": "string", "example": "ApiError"},
        "message": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
    },
    "additionalProperties": True,
}


def _install_openapi(api: FastAPI) -> None:
    """FastAPI's document, plus the send lane's msgspec schemas, the error envelope and Bearer auth."""
    from fastapi.openapi.utils import get_openapi

    from openbloo.messages.router import SEND_COMPONENTS

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas.update(SEND_COMPONENTS)
            schemas["ApiError"] = API_ERROR_SCHEMA
            components["securitySchemes"] = {"BearerAuth": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"BearerAuth": []}]
            schema["servers"] = [{"url": "/"}]
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


class Openbloo:
    """The ASGI front: auth for every API request, the lean send lane, FastAPI for the rest."""

    def __init__(self, runtime: Runtime, worker_process: WorkerProcess | None = None) -> None:
        from openbloo.messages.send_lane import SendLane

        self.runtime = runtime
        self.api = build_api(runtime, worker_process)
        self.send_lane = SendLane(runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        path: str = scope["path"]
        if not path.startswith(PREFIX) or path in PUBLIC_PATHS:
            await self.api(scope, receive, send)
            return
        try:
            ctx = await self.runtime.auth.resolve_header(header(scope, b"authorization"))
        except ApiError as exc:
            await respond_error(send, exc)
            return
        scope.setdefault("state", {})["auth"] = ctx
        if scope["method"] == "POST":
            raw_path = scope.get("raw_path") or path.encode()
            match = SEND_PATH.match(raw_path.split(b"?", 1)[0])
            if match is not None:
                chat_id = _chat_id_of(match.group(1))
                await self.send_lane(scope, receive, send, ctx, chat_id)
                return
        await self.api(scope, receive, send)

    # -- the send route without ASGI (openbloo.http_lane) ----------------------------------------------------
    @property
    def lean_front(self) -> Openbloo:
        return self

    def lean_request(self, url: bytes, headers: list[tuple[bytes, bytes]]) -> LeanSend | None:
        """A ``POST`` to the send route by a key in the cache, as the HTTP protocol parsed it; None for any other
        request (it then takes the ASGI way)."""
        match = SEND_PATH.match(url.split(b"?", 1)[0])
        if match is None:
            return None
        authorization = idempotency_key = from_number = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"idempotency-key":
                idempotency_key = value.decode("latin-1")
            elif name == b"x-from-number":
                from_number = value.decode("latin-1")
        ctx = self.runtime.auth.cached(authorization) if authorization else None
        if ctx is None:
            return None
        return LeanSend(ctx, _chat_id_of(match.group(1)), idempotency_key, from_number)

    def lean_send(self, request: LeanSend, body: bytes, answer: Answer) -> None:
        """Accept ``request``; ``answer(status, body, headers)`` is called once, when the send is refused or
        committed."""
        try:
            fut = self.send_lane.submit(
                request.ctx, request.chat_id, body, request.idempotency_key, request.from_number
            )
        except Exception as exc:
            _answer_error(exc, answer)
            return
        fut.add_done_callback(lambda f: _answer_outcome(f, answer))


Answer = Callable[[int, bytes, "dict[str, str] | None"], None]


class LeanSend(NamedTuple):
    ctx: AuthContext
    chat_id: str
    idempotency_key: str | None
    from_number: str | None


def _answer_outcome(fut: asyncio.Future[SendOutcome], answer: Answer) -> None:
    exc = asyncio.CancelledError() if fut.cancelled() else fut.exception()
    if exc is None:
        outcome = fut.result()
        answer(outcome.status, outcome.body, None)
    else:
        _answer_error(exc, answer)


def _answer_error(exc: BaseException, answer: Answer) -> None:
    if isinstance(exc, ApiError):
        answer(exc.status, exc.body_bytes(), exc.response_headers())
        return
    if not isinstance(exc, asyncio.CancelledError):
        log.error("send failed", exc_info=exc)
    answer(INTERNAL_ERROR.status, INTERNAL_ERROR.body_bytes(), None)


def create_app(runtime: Runtime | None = None, worker_process: WorkerProcess | None = None) -> Openbloo:
    """The ASGI application; ``worker_process`` (serve's) is started and stopped with it."""
    return Openbloo(runtime or Runtime.create(), worker_process)
