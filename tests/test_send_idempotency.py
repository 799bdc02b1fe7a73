"""``Idempotency-Key`` on ``POST /chats/{chatId}/messages`` (API.md §1.9; DECISIONS.md §3)."""

from __future__ import annotations

import threading
from typing import Any

import blooio
import httpx
import pytest
from sqlalchemy import update

from openbloo.db import models as m
from openbloo.ids import now_ms
from tests.conftest import Server, Tenant, unique_number
from tests.test_send_support import (
    DAY_MS,
    accepted,
    assert_error,
    db_write,
    enc,
    http,
    new_tenant,
    rows,
    sdk,
    seed_inbound,
    send,
    update_message,
)


def _messages(t: Tenant) -> list[Any]:
    return rows(t.server, m.messages, m.messages.c.organization_id == t.organization_id)


def test_first_202_then_200_with_the_original_body(tenant: Tenant) -> None:
    to = unique_number()
    client = sdk(tenant)
    first = client.chats.messages.with_raw_response.send(to, text="once", idempotency_key="key-1")
    again = client.chats.messages.with_raw_response.send(to, text="once", idempotency_key="key-1")
    assert first.status_code == 202 and again.status_code == 200
    assert again.http_response.content == first.http_response.content
    assert again.parse().message_id == first.parse().message_id
    assert len(_messages(tenant)) == 1


def test_replay_of_a_text_array_returns_the_same_ids(tenant: Tenant) -> None:
    to = unique_number()
    headers = {"Idempotency-Key": "arr"}
    first = accepted(send(tenant, to, {"text": ["a", "b"]}, headers=headers))
    again = accepted(send(tenant, to, {"text": ["a", "b"]}, headers=headers), 200)
    assert again == first and len(first["message_ids"]) == 2
    assert len(_messages(tenant)) == 2


def test_replay_of_a_multi_recipient_send_keeps_group_fields(tenant: Tenant) -> None:
    ids = f"{unique_number()},{unique_number()}"
    headers = {"Idempotency-Key": "grp"}
    first = accepted(send(tenant, ids, {"text": "hi"}, headers=headers))
    again = accepted(send(tenant, ids, {"text": "hi"}, headers=headers), 200)
    assert again == first and again["group_created"] is True


def test_raw_plus_and_encoded_path_are_the_same_request(tenant: Tenant) -> None:
    to = unique_number()
    headers = {"Idempotency-Key": "path-forms"}
    first = accepted(send(tenant, to, {"text": "x"}, headers=headers, encoded=False))
    with http(tenant) as c:
        again = c.post(f"/chats/{enc(to)}/messages", json={"text": "x"}, headers=headers)
    assert again.status_code == 200 and again.json() == first


def test_same_key_different_body_is_409(tenant: Tenant) -> None:
    to = unique_number()
    client = sdk(tenant)
    client.chats.messages.send(to, text="one", idempotency_key="key-2")
    with pytest.raises(blooio.ConflictError) as exc:
        client.chats.messages.send(to, text="two", idempotency_key="key-2")
    assert exc.value.status_code == 409
    assert exc.value.body["code"] == "idempotency_key_reused"  # type: ignore[index]
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert len(_messages(tenant)) == 1


def test_same_key_different_chat_is_409(tenant: Tenant) -> None:
    headers = {"Idempotency-Key": "key-3"}
    accepted(send(tenant, unique_number(), {"text": "same"}, headers=headers))
    assert_error(send(tenant, unique_number(), {"text": "same"}, headers=headers), 409, "idempotency_key_reused")


def test_409_is_not_retried_by_the_sdk(tenant: Tenant) -> None:
    to = unique_number()
    client = sdk(tenant, max_retries=2)
    client.chats.messages.send(to, text="one", idempotency_key="key-4")
    with pytest.raises(blooio.ConflictError) as exc:
        client.chats.messages.send(to, text="two", idempotency_key="key-4")
    assert exc.value.response.request.headers.get("x-stainless-retry-count") == "0"


def test_keys_are_scoped_to_the_organization(tenant: Tenant, other_tenant: Tenant) -> None:
    to = unique_number()
    headers = {"Idempotency-Key": "shared-key"}
    mine = accepted(send(tenant, to, {"text": "x"}, headers=headers))
    theirs = accepted(send(other_tenant, to, {"text": "x"}, headers=headers))
    assert mine["message_id"] != theirs["message_id"]


def test_keys_are_shared_by_the_keys_of_one_organization(tenant: Tenant) -> None:
    from tests.test_send_support import add_key, key_client

    second = add_key(tenant.server, tenant, "second")
    to = unique_number()
    headers = {"Idempotency-Key": "org-wide"}
    first = accepted(send(tenant, to, {"text": "x"}, headers=headers))
    with key_client(tenant.server, second.api_key) as c:
        again = send(tenant, to, {"text": "x"}, headers=headers, client=c)
    assert again.status_code == 200 and again.json() == first


def test_without_a_key_every_send_is_new(tenant: Tenant) -> None:
    to = unique_number()
    a = accepted(send(tenant, to, {"text": "x"}))
    b = accepted(send(tenant, to, {"text": "x"}))
    assert a["message_id"] != b["message_id"]


def test_key_is_kept_24_hours_then_expires(tenant: Tenant) -> None:
    to = unique_number()
    headers = {"Idempotency-Key": "expiring"}
    first = accepted(send(tenant, to, {"text": "x"}, headers=headers))
    table = m.idempotency_keys
    [row] = rows(tenant.server, table, table.c.organization_id == tenant.organization_id)
    assert row.expires_at - row.created_at >= 24 * 3600 * 1000

    def expire(batch: Any) -> None:
        batch.conn.execute(
            update(table).where(table.c.organization_id == tenant.organization_id).values(expires_at=now_ms() - 1)
        )

    db_write(tenant.server, expire)
    again = accepted(send(tenant, to, {"text": "x"}, headers=headers))
    assert again["message_id"] != first["message_id"]
    assert send(tenant, to, {"text": "x"}, headers=headers).json() == again


def test_key_of_255_chars_is_accepted_256_refused(tenant: Tenant) -> None:
    accepted(send(tenant, unique_number(), {"text": "x"}, headers={"Idempotency-Key": "k" * 255}))
    resp = send(tenant, unique_number(), {"text": "x"}, headers={"Idempotency-Key": "k" * 256})
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] in ("invalid_request", "invalid_idempotency_key")
    assert len(_messages(tenant)) == 1


def test_refused_send_does_not_burn_the_key(server: Server) -> None:
    t = new_tenant(server, plan_kind="inbound")
    to = unique_number()
    headers = {"Idempotency-Key": "after-403"}
    assert_error(send(t, to, {"text": "x"}, headers=headers), 403, "inbound_only_no_prior_inbound")
    seed_inbound(server, t, to)  # the contact writes first; the same request may now go out
    first = accepted(send(t, to, {"text": "x"}, headers=headers))
    assert send(t, to, {"text": "x"}, headers=headers).json() == first
    assert len([r for r in _messages(t) if r.direction == "outbound"]) == 1


def test_replay_wins_over_state_that_changed_since(tenant: Tenant) -> None:
    to = unique_number()
    parent = accepted(send(tenant, to, {"text": "parent"}))["message_id"]
    headers = {"Idempotency-Key": "reply-once"}
    body = {"text": "r", "reply_to": {"message_id": parent}}
    first = accepted(send(tenant, to, body, headers=headers))
    update_message(tenant.server, parent, time_sent=now_ms() - 31 * DAY_MS)  # a fresh send would now be refused
    assert_error(send(tenant, to, body), 400, "reply_target_expired")
    again = send(tenant, to, body, headers=headers)
    assert again.status_code == 200 and again.json() == first


def _parallel(t: Tenant, n: int, request: Any) -> list[httpx.Response]:
    """Fire ``n`` requests at once, each from its own thread and its own client."""
    barrier = threading.Barrier(n)
    results: list[httpx.Response] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            with http(t) as c:
                barrier.wait()
                resp = request(c)
            with lock:
                results.append(resp)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors, errors
    assert len(results) == n
    return results


def test_20_parallel_identical_requests_create_one_message(tenant: Tenant) -> None:
    to = unique_number()
    path = f"/chats/{enc(to)}/messages"
    results = _parallel(
        tenant, 20, lambda c: c.post(path, json={"text": "only once"}, headers={"Idempotency-Key": "parallel"})
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] * 19 + [202], [r.text for r in results]
    assert len({r.content for r in results}) == 1
    msgs = _messages(tenant)
    assert len(msgs) == 1 and msgs[0].id == results[0].json()["message_id"]
    assert msgs[0].job_state is not None  # one message, with its delivery job
    keys = rows(tenant.server, m.idempotency_keys, m.idempotency_keys.c.organization_id == tenant.organization_id)
    assert len(keys) == 1


def test_20_parallel_requests_with_one_key_and_different_bodies(tenant: Tenant) -> None:
    to = unique_number()
    path = f"/chats/{enc(to)}/messages"
    counter = iter(range(20))
    lock = threading.Lock()

    def request(c: httpx.Client) -> httpx.Response:
        with lock:
            i = next(counter)
        return c.post(path, json={"text": f"body {i}"}, headers={"Idempotency-Key": "contested"})

    results = _parallel(tenant, 20, request)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [202] + [409] * 19
    assert all(r.json()["code"] == "idempotency_key_reused" for r in results if r.status_code == 409)
    assert len(_messages(tenant)) == 1
