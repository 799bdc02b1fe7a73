"""The send route's lean lane: raw ASGI + msgspec in front of the planner and the group-commit writer.

``POST /v2/api/chats/{chatId}/messages`` is the hot path. It reaches here already authenticated by the ASGI
front (:mod:`openbloo.app`), skips FastAPI's per-request machinery, and answers with the same error envelope
and the same documented shapes. Its OpenAPI description comes from the same msgspec Structs that parse it.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec

from openbloo.addressing import parse_chat_id
from openbloo.asgi import Receive, Scope, Send, header, read_body, respond, respond_error
from openbloo.auth.context import AuthContext
from openbloo.errors import ApiError, bad_request
from openbloo.messages.idempotency import Idempotency, SendOutcome
from openbloo.messages.planner import plan_send
from openbloo.messages.rules import validate_send
from openbloo.messages.wire import decode_send_body
from openbloo.runtime import Runtime

log = logging.getLogger("openbloo.send")

INTERNAL_ERROR = ApiError(500, "internal_error", "Internal server error")


def _decode_error(exc: msgspec.DecodeError) -> ApiError:
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        # msgspec says e.g. "Expected `str`, got `int` - at `$.text`": name the field the way clients write it.
        message, _, where = text.partition(" - at `")
        field = where.rstrip("`").removeprefix("$.").removeprefix("$") or "body"
        return bad_request(f"Invalid value for '{field}': {message}")
    return bad_request("Request body is not valid JSON")


class SendLane:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.ttl_ms = int(runtime.settings.idempotency_ttl_hours * 3600 * 1000)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, ctx: AuthContext, chat_id: str) -> None:
        try:
            body = await read_body(receive)
            idempotency_key, from_number = header(scope, b"idempotency-key"), header(scope, b"x-from-number")
            outcome = await self.submit(ctx, chat_id, body, idempotency_key, from_number)
        except ApiError as exc:
            await respond_error(send, exc)
            return
        except Exception:
            log.exception("send failed")
            await respond_error(send, INTERNAL_ERROR)
            return
        await respond(send, outcome.status, outcome.body)

    def submit(
        self, ctx: AuthContext, chat_id: str, body: bytes, idempotency_key: str | None, from_number: str | None
    ) -> asyncio.Future[SendOutcome]:
        """Check the request and queue its unit of work: the future's result is the answer once committed.

        Raises :class:`ApiError` at once for a request refused before the database is asked. Both ways in call
        this: the ASGI lane above and the HTTP protocol's (:mod:`openbloo.http_lane`).
        """
        address = parse_chat_id(chat_id, ctx.region)
        if not body.strip():
            raise bad_request("The body needs 'text', 'attachments' or 'parts'")
        try:
            parsed = decode_send_body(body)
        except msgspec.DecodeError as exc:
            raise _decode_error(exc) from None
        request = validate_send(parsed, header_from_number=from_number)
        idem = Idempotency.of(idempotency_key, address.key, body, self.ttl_ms)
        return self.runtime.writer.submit(plan_send(ctx, address, request, idem, self.runtime.notify_jobs))
