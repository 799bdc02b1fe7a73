"""The HTTP edge: authentication, the v2 error envelope on every error path, and the public OpenAPI document.

API.md §1.2–1.3, DECISIONS.md §1–2: every error body is exactly ``{"error": "ApiError", "message", "status",
"code"}`` (plus documented extras), ``status`` equals the HTTP status, and nothing ever leaks FastAPI's default
``{"detail": ...}`` body or a stack trace.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from openbloo.auth.keys import revoke_key
from openbloo.db.writer import run_unit
from tests.conftest import Server, Tenant

CHAT = "%2B15551234567"
ENVELOPE_KEYS = {"error", "message", "status", "code"}

# (method, path, request kwargs): routes of both layers (FastAPI reads and the lean send lane).
AUTHED_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/me", {}),
    ("GET", "/me/numbers", {}),
    ("POST", f"/chats/{CHAT}/messages", {"json": {"text": "hello"}}),
    ("GET", f"/chats/{CHAT}/messages/msg_x", {}),
]


def assert_envelope(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    """The response is the v2 error envelope with this status (and code, if given), nothing FastAPI-shaped."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert "Traceback" not in response.text
    body = response.json()
    assert isinstance(body, dict)
    assert "detail" not in body, body
    assert set(body) >= ENVELOPE_KEYS, body
    assert body["error"] == "ApiError"
    assert body["status"] == status == response.status_code
    assert isinstance(body["code"], str) and body["code"]
    if code is not None:
        assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"].strip()
    return body


def assert_plain_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """As :func:`assert_envelope`, for errors that document no extra fields: exactly the four keys."""
    body = assert_envelope(response, status, code)
    assert set(body) == ENVELOPE_KEYS, body
    return body


def client(server: Server, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=headers or {}, timeout=10)


def wait_for_status(http: httpx.Client, path: str, status: int, timeout: float = 3.0) -> httpx.Response:
    """Poll ``GET path`` until it answers ``status`` (the server trusts its key cache for 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


# -- 401 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "fragment"),
    [
        (None, "Missing Authorization"),
        ("Token bl_live_abcdefabcdefabcdefabcdefabcdefab", "Malformed"),
        ("Bearer", "Malformed"),
        ("Basic dXNlcjpwYXNz", "Malformed"),
        ("Bearer two tokens", "Malformed"),
        ("Bearer bl_live_thisKeyDoesNotExist0000000000000", "Invalid or revoked"),
        ("Bearer not-even-a-key", "Invalid or revoked"),
    ],
    ids=["missing", "token-scheme", "bearer-alone", "basic", "two-tokens", "unknown-key", "garbage-key"],
)
def test_bad_authorization_is_401_envelope_on_every_route(
    server: Server, tenant: Tenant, authorization: str | None, fragment: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with client(server, headers) as http:
        for method, path, kwargs in AUTHED_ROUTES:
            response = http.request(method, path, **kwargs)
            body = assert_plain_envelope(response, 401, "unauthorized")
            assert fragment in body["message"], (method, path, body)


def test_bearer_scheme_is_case_insensitive(server: Server, tenant: Tenant) -> None:
    with client(server, {"Authorization": f"bearer {tenant.api_key}"}) as http:
        response = http.get("/me")
    assert response.status_code == 200, response.text
    assert response.json()["organization_id"] == tenant.organization_id


def test_auth_comes_before_routing(server: Server) -> None:
    """Without a key, even an unknown path under the prefix says 401 (no route probing without a key)."""
    with client(server) as http:
        assert_plain_envelope(http.get("/no/such/route"), 401, "unauthorized")
        assert_plain_envelope(http.delete("/me"), 401, "unauthorized")


@pytest.mark.parametrize("revoke_with", ["full_key", "prefix"])
def test_revoked_key_is_401_within_seconds(server: Server, tenant: Tenant, revoke_with: str) -> None:
    survivor = tenant.add_key("survivor")
    with (
        client(server, tenant.headers()) as http,
        client(server, {"Authorization": f"Bearer {survivor.api_key}"}) as other,
    ):
        # Warm the server's key cache first: revocation must beat a cached "valid".
        assert http.get("/me").status_code == 200
        assert http.get("/me/numbers").status_code == 200
        target = tenant.api_key if revoke_with == "full_key" else tenant.key_prefix
        assert run_unit(server.runtime.engine, revoke_key(target)) == tenant.key_prefix

        started = time.monotonic()
        response = wait_for_status(http, "/me", 401)
        assert_plain_envelope(response, 401, "unauthorized")
        assert time.monotonic() - started < 3.0
        for method, path, kwargs in AUTHED_ROUTES:
            assert_plain_envelope(http.request(method, path, **kwargs), 401, "unauthorized")

        # Only that key: another key of the same organization keeps working.
        me = other.get("/me")
        assert me.status_code == 200, me.text
        assert me.json()["organization_id"] == tenant.organization_id


# -- 400 / 404 / 405 ---------------------------------------------------------------------------------------


def test_bad_chat_id_is_400_invalid_chat_id(tenant: Tenant) -> None:
    with tenant.http() as http:
        assert_plain_envelope(http.get("/chats/abc/messages/msg_x"), 400, "invalid_chat_id")
        assert_plain_envelope(http.get("/chats/abc/messages/msg_x/status"), 400, "invalid_chat_id")
        assert_plain_envelope(http.post("/chats/abc/messages", json={"text": "hi"}), 400, "invalid_chat_id")


@pytest.mark.parametrize(
    "body",
    [b'{"text": "hi"', b"{not json}", b"text=hi", b'{"text": "hi"} trailing'],
    ids=["truncated", "not-json", "form-encoded", "trailing-garbage"],
)
def test_send_with_invalid_json_is_400_invalid_request(tenant: Tenant, body: bytes) -> None:
    with tenant.http() as http:
        response = http.post(f"/chats/{CHAT}/messages", content=body, headers={"Content-Type": "application/json"})
    assert_plain_envelope(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("body", "field"),
    [(b"[1, 2]", None), (b"", None), (b'{"text": 5}', "text")],
    ids=["array", "empty", "wrong-type"],
)
def test_send_with_invalid_body_is_400_invalid_request(tenant: Tenant, body: bytes, field: str | None) -> None:
    with tenant.http() as http:
        response = http.post(f"/chats/{CHAT}/messages", content=body, headers={"Content-Type": "application/json"})
    error = assert_plain_envelope(response, 400, "invalid_request")
    if field is not None:
        assert f"'{field}'" in error["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/me/nope"),
        ("GET", f"/chats/{CHAT}/messages/msg_x/nope"),
        ("GET", "/v1/api/me"),
    ],
)
def test_unknown_route_with_valid_key_is_404_not_found(tenant: Tenant, method: str, path: str) -> None:
    with tenant.http() as http:
        response = http.request(method, path)
    assert_plain_envelope(response, 404, "not_found")


def test_unknown_message_is_404_envelope(tenant: Tenant) -> None:
    with tenant.http() as http:
        response = http.get(f"/chats/{CHAT}/messages/msg_doesnotexist")
    body = assert_envelope(response, 404, None)
    assert body["code"].endswith("not_found")


@pytest.mark.parametrize(("method", "path"), [("DELETE", "/me"), ("POST", "/me"), ("PUT", "/me/numbers")])
def test_wrong_method_is_405_method_not_allowed(tenant: Tenant, method: str, path: str) -> None:
    with tenant.http() as http:
        response = http.request(method, path)
    assert_plain_envelope(response, 405, "method_not_allowed")
    assert "GET" in response.headers.get("allow", ""), response.headers


def test_paths_outside_the_api_need_no_key(server: Server) -> None:
    with httpx.Client(base_url=server.root_url, timeout=10) as http:
        assert http.get("/healthz").json() == {"ok": True}
        assert_plain_envelope(http.get("/nope"), 404, "not_found")


# -- OpenAPI -----------------------------------------------------------------------------------------------


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/components/schemas/"), ref
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def test_openapi_is_public_and_documents_send(server: Server) -> None:
    with client(server) as http:
        response = http.get("/openapi.json")
        assert response.status_code == 200, response.text
        # A bad key does not matter on a public path either.
        assert http.get("/openapi.json", headers={"Authorization": "Bearer nope"}).status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert "get" in paths["/v2/api/me"]
    assert "get" in paths["/v2/api/me/numbers"]

    send = paths["/v2/api/chats/{chatId}/messages"]["post"]
    assert any(p["name"] == "chatId" and p["in"] == "path" for p in send["parameters"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in send["parameters"])
    body_schema = _resolve(doc, send["requestBody"]["content"]["application/json"]["schema"])
    assert body_schema.get("type") == "object"
    assert {"text", "attachments", "parts"} <= set(body_schema["properties"])
    assert "202" in send["responses"]

    error_schema = _resolve(doc, send["responses"]["400"]["content"]["application/json"]["schema"])
    assert set(error_schema["required"]) == ENVELOPE_KEYS
    assert doc["components"]["securitySchemes"]["BearerAuth"] == {"type": "http", "scheme": "bearer"}
