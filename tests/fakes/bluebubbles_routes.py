"""The fake BlueBubbles Server's routes: ``/api/v1/...`` as the real server answers them, plus ``/fake/...``
controls for trying openbloo by hand. Validation messages and envelopes follow TRANSPORTS.md §1.3–§1.7.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from openbloo.ids import now_ms
from tests.fakes.bluebubbles_model import Attachment, new_guid

if TYPE_CHECKING:
    from tests.fakes.bluebubbles import FakeBlueBubbles

_webhook_ids = itertools.count(1)


def api_routes(fake: FakeBlueBubbles) -> list[Route]:
    from tests.fakes.bluebubbles import EVENTS, PAPI_FIELDS, REACTIONS, Refusal, bad_request, fail, ok

    def route(path: str, methods: list[str]) -> Callable[[Callable[..., Awaitable[Response]]], Route]:
        def wrap(handler: Callable[..., Awaitable[Response]]) -> Route:
            async def endpoint(request: Request) -> Response:
                try:
                    _entry, body = await fake.record(request)
                    return await handler(request, body if isinstance(body, dict) else {})
                except Refusal as refusal:
                    return refusal.response

            return Route("/api/v1" + path, endpoint, methods=methods)

        return wrap

    def method_of(body: dict[str, Any], fields: tuple[str, ...] = PAPI_FIELDS) -> str:
        # The server forces the Private API for any field only it can do.
        if any(body.get(f) not in (None, "") for f in fields):
            return "private-api"
        method = body.get("method") or "apple-script"
        if method not in ("apple-script", "private-api"):
            raise bad_request("The selected method is invalid.")
        return str(method)

    def chat_or_fail(guid: Any) -> Any:
        chat = fake.store.chat(str(guid)) if guid else None
        if chat is None:
            raise fail(500, "Message Send Error", "iMessage Error", f"Chat does not exist: {guid}")
        return chat

    @route("/ping", ["GET"])
    async def ping(_r: Request, _b: dict[str, Any]) -> Response:
        return ok("Ping received!", "pong")

    @route("/server/info", ["GET"])
    async def server_info(_r: Request, _b: dict[str, Any]) -> Response:
        return ok("Successfully fetched metadata", fake.server_info())

    @route("/message/text", ["POST"])
    async def send_text(_r: Request, body: dict[str, Any]) -> Response:
        if not body.get("chatGuid"):
            raise bad_request("The chatGuid field is required.")
        if "message" not in body:
            raise bad_request("The message field is required.")
        method = method_of(body)
        temp = body.get("tempGuid")
        if method == "apple-script":
            if not temp:
                raise bad_request("A 'tempGuid' is required when sending via AppleScript")
            if not body.get("message"):
                raise bad_request("A 'message' is required when sending via AppleScript")
        else:
            fake.require_private_api()
        chat = chat_or_fail(body["chatGuid"])
        reply = body.get("selectedMessageGuid")
        part = int(body.get("partIndex") or 0)
        message = await fake.send(
            chat,
            body.get("message") or None,
            temp,
            method,
            effect_id=body.get("effectId"),
            subject=body.get("subject"),
            thread_guid=reply,
            thread_part=f"{part}:0:{len(body.get('message') or '')}" if reply else None,
        )
        return ok("Message sent!", message.json(temp_guid=temp))

    @route("/message/attachment", ["POST"])
    async def send_attachment(request: Request, body: dict[str, Any]) -> Response:
        entry = fake.requests[-1]
        content = entry.contents.get("attachment")
        if not content:
            raise bad_request("Attachment not provided or was empty!")
        for required in ("chatGuid", "name"):
            if not body.get(required):
                raise bad_request(f"The {required} field is required.")
        method = method_of(body, PAPI_FIELDS[:4])
        if method == "apple-script" and not body.get("tempGuid"):
            raise bad_request("A 'tempGuid' is required when sending via AppleScript")
        if method == "private-api":
            fake.require_private_api()
        chat = chat_or_fail(body["chatGuid"])
        mime = entry.files["attachment"][2]
        file = Attachment(new_guid(), str(body["name"]), mime, content)
        message = await fake.send(chat, None, body.get("tempGuid"), method, attachments=[file])
        return ok("Attachment sent!", message.json())  # no tempGuid echo for attachments

    @route("/attachment/upload", ["POST"])
    async def upload(_r: Request, _b: dict[str, Any]) -> Response:
        fake.require_private_api()
        entry = fake.requests[-1]
        content = entry.contents.get("attachment")
        if not content:
            raise bad_request("Attachment not provided or was empty!")
        name, _size, mime = entry.files["attachment"]
        path = f"{new_guid()}/{hashlib.sha1(content).hexdigest()}.{name.rsplit('.', 1)[-1]}"
        fake.store.uploads[path] = Attachment(new_guid(), name, mime, content)
        return ok("Attachment uploaded!", {"path": path})

    @route("/message/multipart", ["POST"])
    async def multipart(_r: Request, body: dict[str, Any]) -> Response:
        fake.require_private_api()
        chat = chat_or_fail(body.get("chatGuid"))
        parts = body.get("parts")
        if not isinstance(parts, list) or not parts:
            raise bad_request("The parts field is required.")
        texts: list[str] = []
        files: list[Attachment] = []
        for part in parts:
            if not isinstance(part, dict) or not isinstance(part.get("partIndex"), int):
                raise bad_request("Each part needs a partIndex")
            if part.get("attachment"):
                upload = fake.store.uploads.get(str(part["attachment"]))
                if upload is None:
                    raise bad_request(f"Attachment '{part['attachment']}' does not exist")
                files.append(upload)
            elif part.get("text"):
                texts.append(str(part["text"]))
        temp = body.get("tempGuid")
        reply = body.get("selectedMessageGuid")
        message = await fake.send(
            chat, " ".join(texts) or None, temp, "private-api", attachments=files, thread_guid=reply
        )
        return ok("Message sent!", message.json(temp_guid=temp))

    @route("/chat/new", ["POST"])
    async def new_chat(_r: Request, body: dict[str, Any]) -> Response:
        addresses = body.get("addresses")
        if not isinstance(addresses, list) or not addresses:
            raise bad_request("The addresses field is required.")
        method = method_of(body, ("effectId", "subject", "attributedBody"))
        if method == "private-api":
            fake.require_private_api()
            if not body.get("message"):
                raise fail(500, "An unhandled error has occurred!", "Server Error",
                           "A message is required when creating chats with the Private API!")  # fmt: skip
        elif len(addresses) > 1:
            raise fail(500, "An unhandled error has occurred!", "Server Error",
                       "Cannot create group chats on macOS Big Sur or newer!")  # fmt: skip
        service = "SMS" if body.get("service") == "SMS" else "iMessage"
        with fake._lock:
            chat = fake.store.dm(addresses[0], service) if len(addresses) == 1 else fake.store.group(addresses)
        temp = body.get("tempGuid")
        message = await fake.send(chat, body.get("message"), temp, method, effect_id=body.get("effectId"))
        data = chat.json(participants=True)
        data["messages"] = [message.json(chats=False, temp_guid=temp)]
        return ok("Successfully created chat!", data)

    @route("/handle/availability/imessage", ["GET"])
    async def availability(request: Request, _b: dict[str, Any]) -> Response:
        address = request.query_params.get("address")
        if not address:
            raise bad_request("The address field is required.")
        fake.require_private_api()
        return ok("Successfully determined iMessage availability!", {"available": address not in fake.sms_only})

    @route("/message/react", ["POST"])
    async def react(_r: Request, body: dict[str, Any]) -> Response:
        fake.require_private_api()
        for required in ("chatGuid", "selectedMessageGuid", "reaction"):
            if not body.get(required):
                raise bad_request(f"The {required} field is required.")
        if str(body["reaction"]).lstrip("-") not in REACTIONS:
            raise bad_request("Invalid reaction")
        target = fake.store.message(str(body["selectedMessageGuid"]))
        if target is None:
            raise bad_request("Selected message does not exist!")
        message = await fake.send(
            target.chat,
            f"Loved “{target.text or ''}”",
            None,
            "private-api",
            associated_guid=f"p:{int(body.get('partIndex') or 0)}/{target.guid}",
            associated_type=str(body["reaction"]),
        )
        return ok("Reaction sent!", message.json())

    @route("/chat/{guid:path}/typing", ["POST", "DELETE"])
    async def typing(request: Request, _b: dict[str, Any]) -> Response:
        fake.require_private_api()
        started = request.method == "POST"
        return ok("Successfully started typing!" if started else "Successfully stopped typing!")

    @route("/chat/{guid:path}/read", ["POST"])
    async def read(_r: Request, _b: dict[str, Any]) -> Response:
        fake.require_private_api()
        return ok("Successfully marked chat as read!")

    @route("/chat/{guid:path}/message", ["GET"])
    async def chat_messages(request: Request, _b: dict[str, Any]) -> Response:
        guid = request.path_params["guid"]
        if fake.store.chat(guid) is None:
            raise fail(404, "The requested resource was not found", "Database Error", "Chat does not exist!")
        q = request.query_params
        bounds = {k: q[k] for k in ("after", "before", "offset", "limit", "sort") if k in q}
        found = fake.store.query({"chatGuid": guid, **bounds})
        return ok("Successfully fetched messages!", [m.json(chats=False) for m in found])

    @route("/chat/{guid:path}", ["GET"])
    async def chat(request: Request, _b: dict[str, Any]) -> Response:
        found = fake.store.chat(request.path_params["guid"])
        if found is None:
            raise fail(404, "The requested resource was not found", "Database Error", "Chat does not exist!")
        return ok("Successfully fetched chat!", found.json(participants=True))

    @route("/message/query", ["POST"])
    async def query(_r: Request, body: dict[str, Any]) -> Response:
        if body.get("chatGuid") and fake.store.chat(str(body["chatGuid"])) is None:
            return PlainTextResponse("Not Found", status_code=404)  # the handler never sends its own answer
        limit = int(body.get("limit") or 100)
        if not 1 <= limit <= 1000:
            raise bad_request("The limit must be between 1 and 1000.")
        with_ = {str(w).lower() for w in body.get("with") or ()}
        found = fake.store.query(body)
        data = [
            m.json(chats=bool(with_ & {"chat", "chats"}), participants="chats.participants" in with_) for m in found
        ]
        total = len(fake.store.messages)
        meta = {"offset": int(body.get("offset") or 0), "limit": limit, "total": total, "count": len(data)}
        return ok("Successfully fetched messages!", data, metadata=meta)

    @route("/message/{guid}", ["GET"])
    async def message(request: Request, _b: dict[str, Any]) -> Response:
        found = fake.store.message(request.path_params["guid"])
        if found is None:
            raise fail(404, "The requested resource was not found", "Database Error", "Message does not exist!")
        with_ = request.query_params.get("with", "").lower()
        return ok("Successfully fetched message!", found.json(chats="chat" in with_))

    @route("/attachment/{guid}/download", ["GET"])
    async def download(request: Request, _b: dict[str, Any]) -> Response:
        for m in fake.store.messages:
            for a in m.attachments:
                if a.guid == request.path_params["guid"]:
                    return Response(a.content, media_type=a.mime)
        raise fail(404, "The requested resource was not found", "Database Error", "Attachment does not exist!")

    @route("/webhook", ["GET", "POST"])
    async def webhooks(request: Request, body: dict[str, Any]) -> Response:
        if request.method == "GET":
            q = request.query_params
            found = [w for w in fake.webhooks if ("url" not in q or w["url"] == q["url"])]
            return ok("Successfully fetched webhooks!", found)
        url, events = body.get("url"), body.get("events")
        if not isinstance(url, str) or not url.startswith("http"):
            raise bad_request("The url must start with http")
        if not isinstance(events, list) or not events or any(e not in EVENTS for e in events):
            raise bad_request("Invalid webhook event")
        with fake._lock:
            existing = next((w for w in fake.webhooks if w["url"] == url), None)
            if existing is None:
                existing = {"id": next(_webhook_ids), "url": url, "events": list(events), "created": now_ms()}
                fake.webhooks.append(existing)
        return ok("Successfully created webhook!", existing)

    @route("/webhook/{webhook_id:int}", ["DELETE"])
    async def delete_webhook(request: Request, _b: dict[str, Any]) -> Response:
        with fake._lock:
            before = len(fake.webhooks)
            fake.webhooks[:] = [w for w in fake.webhooks if w["id"] != request.path_params["webhook_id"]]
            if len(fake.webhooks) == before:
                raise fail(404, "The requested resource was not found", "Database Error", "Webhook does not exist!")
        return ok("Successfully deleted webhook!")

    return [
        ping, server_info, send_text, send_attachment, upload, multipart, new_chat, availability, react, typing,
        read, chat_messages, chat, query, message, download, webhooks, delete_webhook,
    ]  # fmt: skip


def fake_routes(fake: FakeBlueBubbles) -> list[Route]:
    """By-hand controls (same password): inject an inbound message, flip the Private API, serve test files."""

    def authorized(request: Request) -> bool:
        return request.query_params.get("password") == fake.password

    async def inbound(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "wrong password"}, status_code=401)
        body = await request.json()
        data = fake.inject_inbound(str(body["from"]), body.get("text"), participants=body.get("group"))
        return JSONResponse({"guid": data["guid"], "chat": data["chats"][0]["guid"]})

    async def settings(request: Request) -> Response:
        if not authorized(request):
            return JSONResponse({"error": "wrong password"}, status_code=401)
        body = await request.json()
        for key in ("private_api", "helper_connected", "delivery_ms", "read_ms", "answer_delay"):
            if key in body:
                setattr(fake, key, body[key])
        return JSONResponse(fake.server_info())

    async def files(request: Request) -> Response:
        found = fake.files.get(request.path_params["name"])
        if found is None:
            return PlainTextResponse("Not Found", status_code=404)
        return Response(found[0], media_type=found[1])

    return [
        Route("/fake/inbound", inbound, methods=["POST"]),
        Route("/fake/settings", settings, methods=["POST"]),
        Route("/fake/files/{name}", files, methods=["GET"]),
    ]
