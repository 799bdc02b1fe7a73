"""Webhook subscriptions through the official SDK and raw HTTP: create, list, update, delete, rotate, URL policy,
tenant walls (API.md §3.17–3.18, DECISIONS.md §14)."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from typing import Any

import blooio
import httpx
import pytest
import uvicorn
from sqlalchemy import select

from openbloo.app import create_app
from openbloo.db import models as m
from openbloo.http_lane import uvicorn_options
from openbloo.ids import now_ms
from openbloo.runtime import Runtime
from openbloo.webhooks.urls import Resolver, UrlRefused, classify
from tests.conftest import Server, Tenant, free_port, make_tenant, server_settings


def create(t: Tenant, url: str, **body: Any) -> httpx.Response:
    with t.http() as http:
        return http.post("/webhooks", json={"webhook_url": url, **body})


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) >= {"error", "message", "status", "code"}, body
    assert body["status"] == r.status_code
    return str(body["code"])


def test_create_returns_secret_once_and_same_url_is_200(tenant: Tenant) -> None:
    client = tenant.sdk()
    created = client.webhooks.create(webhook_url="http://127.0.0.1:9/a", webhook_type="status")
    assert created.webhook_id and created.webhook_id.startswith("wh_")
    assert created.scope == "api_key"
    assert str(created.to_dict()["signing_secret"]).startswith("whsec_")  # a field newer than SDK 1.1.0's model

    again = create(tenant, "http://127.0.0.1:9/a")
    assert again.status_code == 200
    assert again.json()["webhook_id"] == created.webhook_id
    assert "signing_secret" not in again.json()

    listed = client.webhooks.list().webhooks or []
    assert [w.webhook_id for w in listed] == [created.webhook_id]
    one = client.webhooks.retrieve(created.webhook_id)
    assert one.webhook_type == "status" and one.valid_until == -1 and one.is_active is True
    assert one.failure_count == 0 and one.last_triggered is None
    assert one.api_key_name == "test"


def test_first_create_is_201_with_the_documented_fields(tenant: Tenant) -> None:
    r = create(tenant, "http://127.0.0.1:9/fields", scope="organization", webhook_type="all")
    assert r.status_code == 201
    body = r.json()
    assert body["scope"] == "organization" and body["webhook_type"] == "all"
    assert isinstance(body["created_at"], int) and body["message"]
    assert len(body["signing_secret"]) > len("whsec_") + 40


def test_update_type_expiry_and_deprecation(tenant: Tenant) -> None:
    client = tenant.sdk()
    wid = client.webhooks.create(webhook_url="http://127.0.0.1:9/u").webhook_id
    assert wid
    later = now_ms() + 3_600_000
    updated = client.webhooks.update(wid, webhook_type="all", valid_until=later)
    assert updated.webhook_type == "all" and updated.valid_until == later
    deprecated = client.webhooks.update(wid, deprecate=True)
    assert deprecated.is_active is False and isinstance(deprecated.deprecated_at, int)
    with tenant.http() as http:
        revived = http.patch(f"/webhooks/{wid}", json={"deprecated": False, "valid_until": None}).json()
    assert revived["is_active"] is True and revived["deprecated_at"] is None and revived["valid_until"] == -1
    with tenant.http() as http:
        assert error_code(http.patch(f"/webhooks/{wid}", json={"webhook_type": "everything"})) == "invalid_request"
        assert error_code(http.patch(f"/webhooks/{wid}", json={"valid_until": 1000})) == "invalid_request"


def test_delete_is_permanent(tenant: Tenant) -> None:
    client = tenant.sdk()
    wid = client.webhooks.create(webhook_url="http://127.0.0.1:9/d").webhook_id
    assert wid
    deleted = client.webhooks.delete(wid)
    assert deleted.success is True
    with tenant.http() as http:
        r = http.get(f"/webhooks/{wid}")
    assert r.status_code == 404 and error_code(r) == "webhook_not_found"
    assert client.webhooks.list().webhooks == []


def test_rotate_returns_a_new_secret(tenant: Tenant) -> None:
    created = create(tenant, "http://127.0.0.1:9/r").json()
    rotated = tenant.sdk().webhooks.secret.rotate(created["webhook_id"])
    assert rotated.signing_secret and rotated.signing_secret.startswith("whsec_")
    assert rotated.signing_secret != created["signing_secret"]
    assert rotated.rotation_count == 1 and isinstance(rotated.rotated_at, int) and rotated.rotated_by == "test"
    again = tenant.sdk().webhooks.secret.rotate(created["webhook_id"])
    assert again.rotation_count == 2


def test_other_organizations_webhooks_are_invisible(tenant: Tenant, other_tenant: Tenant) -> None:
    wid = create(tenant, "http://127.0.0.1:9/wall").json()["webhook_id"]
    with other_tenant.http() as http:
        for method, path in (
            ("GET", f"/webhooks/{wid}"),
            ("PATCH", f"/webhooks/{wid}"),
            ("DELETE", f"/webhooks/{wid}"),
            ("GET", f"/webhooks/{wid}/logs"),
            ("POST", f"/webhooks/{wid}/secret/rotate"),
            ("POST", f"/webhooks/{wid}/logs/evt_x/replay"),
        ):
            r = http.request(method, path, json={} if method == "PATCH" else None)
            assert r.status_code == 404, (method, path, r.text)
        assert http.get("/webhooks").json() == {"webhooks": []}
    with tenant.http() as http:
        assert http.get(f"/webhooks/{wid}").status_code == 200


def test_sixty_fifth_webhook_is_409(server: Server) -> None:
    t = make_tenant(server)
    with t.http() as http:
        for i in range(64):
            assert http.post("/webhooks", json={"webhook_url": f"http://127.0.0.1:9/n{i}"}).status_code == 201
        r = http.post("/webhooks", json={"webhook_url": "http://127.0.0.1:9/one-too-many"})
        assert r.status_code == 409 and error_code(r) == "webhook_limit_reached"
        assert r.headers.get("x-should-retry") == "false"
        # An already registered URL is still answered 200 at the limit.
        assert http.post("/webhooks", json={"webhook_url": "http://127.0.0.1:9/n3"}).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest",
        "http://[::ffff:169.254.169.254]/x",
        "http://[fe80::1]/x",
        "http://0.0.0.0:8080/x",
        "ftp://127.0.0.1/x",
        "javascript:alert(1)",
        "http:///nohost",
        "http://user:pw@127.0.0.1/x",
        "not a url",
        "",
    ],
)
def test_refused_urls_are_400_invalid_webhook_url(tenant: Tenant, url: str) -> None:
    r = create(tenant, url)
    assert r.status_code == 400, r.text
    assert error_code(r) == "invalid_webhook_url"


def test_missing_or_bad_fields_are_invalid_request(tenant: Tenant) -> None:
    with tenant.http() as http:
        assert error_code(http.post("/webhooks", json={})) == "invalid_request"
        assert error_code(http.post("/webhooks", json={"webhook_url": "http://127.0.0.1:9/x", "scope": "x"})) == (
            "invalid_request"
        )
        bad_type = http.post("/webhooks", json={"webhook_url": "http://127.0.0.1:9/x", "webhook_type": "nope"})
        assert error_code(bad_type) == "invalid_request" and "webhook_type" in bad_type.json()["message"]


def test_address_classification() -> None:
    assert classify(ipaddress.ip_address("8.8.8.8")) == "public"
    assert classify(ipaddress.ip_address("2606:4700::1111")) == "public"
    for private in ("10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "100.64.0.1", "::1", "fc00::1"):
        assert classify(ipaddress.ip_address(private)) == "private", private
    for forbidden in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.1.1", "0.0.0.0", "224.0.0.1", "fe80::1"):
        assert classify(ipaddress.ip_address(forbidden)) == "forbidden", forbidden


async def test_delivery_time_check_resolves_again_and_pins_the_address() -> None:
    strict = Resolver(allow_private=False)
    with pytest.raises(UrlRefused):
        await strict.target("http://localhost:8080/hook")  # a name that resolves to loopback
    with pytest.raises(UrlRefused):
        await strict.check_url("http://127.0.0.1/hook")
    relaxed = Resolver(allow_private=True)
    target = await relaxed.target("http://localhost:8080/hook?x=1")
    assert target.url in ("http://127.0.0.1:8080/hook?x=1", "http://[::1]:8080/hook?x=1")
    assert target.host_header == "localhost:8080" and target.sni_hostname is None
    secure = await relaxed.target("https://localhost/hook")
    assert secure.sni_hostname == "localhost" and secure.host_header == "localhost"


@pytest.fixture(scope="module")
def strict_server(server: Server) -> Iterator[Server]:
    """A second API process on the same database with private webhook addresses refused (and no workers)."""
    runtime = Runtime.create(server_settings(server.database_url, webhook_allow_private=False), migrate=False)
    runtime.run_workers = False
    port = free_port()
    config = uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_level="warning", **uvicorn_options())
    srv = uvicorn.Server(config)
    srv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    root = f"http://127.0.0.1:{port}"
    yield Server(runtime, f"{root}/v2/api", root, server.database_url)
    srv.should_exit = True
    thread.join(15)


def test_private_addresses_only_when_allowed(server: Server, strict_server: Server) -> None:
    t = make_tenant(server)
    client = blooio.Blooio(base_url=strict_server.base_url, api_key=t.api_key, max_retries=0)
    with pytest.raises(blooio.BadRequestError) as refused:
        client.webhooks.create(webhook_url="http://127.0.0.1:9/private")
    assert refused.value.body["code"] == "invalid_webhook_url"  # type: ignore[index]
    with pytest.raises(blooio.BadRequestError):
        client.webhooks.create(webhook_url="http://10.0.0.8/hook")
    # The permissive server (the quick-start default) accepts the same URL.
    assert create(t, "http://127.0.0.1:9/private").status_code == 201
    with server.runtime.engine.connect() as conn:
        urls = [r.url for r in conn.execute(select(m.webhooks.c.url).where(m.webhooks.c.api_key_id.is_not(None)))]
    assert "http://10.0.0.8/hook" not in urls
