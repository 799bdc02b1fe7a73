"""Threaded replies on ``POST /chats/{chatId}/messages``: both ``reply_to`` shapes and every
``reply_target_*`` code (seed; API.md §4.6; DECISIONS.md §4, §10).
"""

from __future__ import annotations

from typing import Any

import blooio
import pytest

from openbloo.db import models as m
from openbloo.ids import now_ms
from tests.conftest import Server, Tenant, unique_number
from tests.test_send_support import (
    DAY_MS,
    accepted,
    add_key,
    add_sender,
    assert_error,
    configure,
    get_message,
    key_client,
    new_tenant,
    parked_tenant,
    rows,
    sdk,
    seed_inbound,
    send,
    update_message,
)


@pytest.fixture
def parked(server: Server) -> Tenant:
    """Messages stay queued: the simulator would send them within milliseconds and store its own GUID."""
    return parked_tenant(server)


def _parent(t: Tenant, to: str, **body: Any) -> str:
    return str(accepted(send(t, to, {"text": "parent", **body}))["message_id"])


# --- message_id shape -----------------------------------------------------------------------------------------


def test_reply_by_message_id_through_sdk(parked: Tenant) -> None:
    to = unique_number()
    parent = _parent(parked, to)
    raw = sdk(parked).chats.messages.with_raw_response.send(
        to, text="a reply", extra_body={"reply_to": {"message_id": parent}}
    )
    assert raw.status_code == 202
    body = raw.http_response.json()
    assert set(body) == {"status", "message_id"}  # parent_unresolved only for an unknown guid
    reply = get_message(parked, to, body["message_id"])
    assert reply["reply_to"] == {"guid": None, "message_id": parent, "part_index": 0}


def test_reply_by_message_id_on_the_simulator(tenant: Tenant) -> None:
    to = unique_number()
    parent = _parent(tenant, to)
    body = accepted(send(tenant, to, {"text": "r", "reply_to": {"message_id": parent}}))
    reply_to = get_message(tenant, to, body["message_id"])["reply_to"]
    assert reply_to["message_id"] == parent and reply_to["part_index"] == 0


def test_reply_to_parent_with_provider_guid_keeps_the_guid(parked: Tenant) -> None:
    to = unique_number()
    parent = _parent(parked, to)
    update_message(parked.server, parent, provider_id="p:0/GUID-PARENT-1", status="sent", protocol="imessage")
    body = accepted(send(parked, to, {"text": "r", "reply_to": {"message_id": parent}}))
    assert get_message(parked, to, body["message_id"])["reply_to"] == {
        "guid": "p:0/GUID-PARENT-1",
        "message_id": parent,
        "part_index": 0,
    }


def test_reply_to_an_inbound_message(tenant: Tenant) -> None:
    to = unique_number()
    guid = f"IN-{now_ms()}"
    inbound = seed_inbound(tenant.server, tenant, to, provider_id=guid)
    body = accepted(send(tenant, to, {"text": "thanks", "reply_to": {"message_id": inbound}}))
    assert get_message(tenant, to, body["message_id"])["reply_to"] == {
        "guid": guid,
        "message_id": inbound,
        "part_index": 0,
    }


def test_reply_in_an_unnamed_group_by_list_and_by_group_id(tenant: Tenant) -> None:
    ids = f"{unique_number()},{unique_number()}"
    first = accepted(send(tenant, ids, {"text": "parent"}))
    accepted(send(tenant, ids, {"text": "r1", "reply_to": {"message_id": first["message_id"]}}))
    accepted(send(tenant, first["group_id"], {"text": "r2", "reply_to": {"message_id": first["message_id"]}}))


# --- guid shape -----------------------------------------------------------------------------------------------


def test_reply_by_known_guid_resolves_the_parent(parked: Tenant) -> None:
    to = unique_number()
    parent = _parent(parked, to)
    guid = f"GUID-{now_ms()}"
    update_message(parked.server, parent, provider_id=guid)
    body = accepted(send(parked, to, {"text": "r", "reply_to": {"guid": guid, "part_index": 1}}))
    assert "parent_unresolved" not in body
    assert get_message(parked, to, body["message_id"])["reply_to"] == {
        "guid": guid,
        "message_id": parent,
        "part_index": 1,
    }


def test_reply_by_known_inbound_guid(tenant: Tenant) -> None:
    to = unique_number()
    guid = f"GUID-IN-{now_ms()}"
    inbound = seed_inbound(tenant.server, tenant, to, provider_id=guid)
    body = accepted(send(tenant, to, {"text": "r", "reply_to": {"guid": guid}}))
    assert "parent_unresolved" not in body
    assert get_message(tenant, to, body["message_id"])["reply_to"]["message_id"] == inbound


def test_reply_by_unknown_guid_proceeds_with_parent_unresolved(tenant: Tenant) -> None:
    to = unique_number()
    raw = sdk(tenant).chats.messages.with_raw_response.send(
        to, text="r", extra_body={"reply_to": {"guid": "never-seen-guid"}}
    )
    assert raw.status_code == 202
    body = raw.http_response.json()
    assert body["parent_unresolved"] is True and body["message_id"].startswith("msg_")
    assert get_message(tenant, to, body["message_id"])["reply_to"] == {
        "guid": "never-seen-guid",
        "message_id": None,
        "part_index": 0,
    }


def test_guid_of_another_org_is_unresolved_not_leaked(tenant: Tenant, other_tenant: Tenant) -> None:
    to = unique_number()
    guid = f"GUID-OTHER-{now_ms()}"
    seed_inbound(other_tenant.server, other_tenant, to, provider_id=guid)
    body = accepted(send(tenant, to, {"text": "r", "reply_to": {"guid": guid}}))
    assert body["parent_unresolved"] is True
    assert get_message(tenant, to, body["message_id"])["reply_to"]["message_id"] is None


# --- reply_target_invalid (DECISIONS.md §4) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply_to",
    [
        {},
        {"message_id": "msg_a", "guid": "g"},
        {"guid": "g", "part_index": -1},
        {"guid": "g", "part_index": "0"},
        {"guid": "g", "part_index": 1.5},
        {"guid": ""},
        {"message_id": ""},
        {"message_id": 12},
        {"part_index": 0},
        "msg_abc",
        ["msg_abc"],
    ],
    ids=[
        "empty",
        "both",
        "negative-index",
        "string-index",
        "float-index",
        "empty-guid",
        "empty-id",
        "int-id",
        "index-only",
        "string",
        "list",
    ],
)
def test_malformed_reply_to_is_400_reply_target_invalid(tenant: Tenant, reply_to: Any) -> None:
    assert_error(send(tenant, unique_number(), {"text": "r", "reply_to": reply_to}), 400, "reply_target_invalid")


# --- reply_target_not_found (404) -----------------------------------------------------------------------------


def test_unknown_message_id_is_404_reply_target_not_found(tenant: Tenant) -> None:
    with pytest.raises(blooio.NotFoundError) as exc:
        sdk(tenant).chats.messages.send(
            unique_number(), text="r", extra_body={"reply_to": {"message_id": "msg_doesnotexist"}}
        )
    assert exc.value.status_code == 404
    assert exc.value.body["code"] == "reply_target_not_found"  # type: ignore[index]
    assert exc.value.body["message"] == "Reply target message not found"  # type: ignore[index]


def test_message_id_of_another_org_is_404(tenant: Tenant, other_tenant: Tenant) -> None:
    to = unique_number()
    theirs = _parent(other_tenant, to)
    resp = send(tenant, to, {"text": "r", "reply_to": {"message_id": theirs}})
    assert_error(resp, 404, "reply_target_not_found")


# --- reply_target_chat_mismatch ------------------------------------------------------------------------------


def test_parent_in_another_chat_is_400_chat_mismatch(tenant: Tenant) -> None:
    parent = _parent(tenant, unique_number())
    resp = send(tenant, unique_number(), {"text": "r", "reply_to": {"message_id": parent}})
    assert_error(resp, 400, "reply_target_chat_mismatch")


def test_guid_parent_in_another_chat_is_400_chat_mismatch(tenant: Tenant) -> None:
    guid = f"GUID-CM-{now_ms()}"
    seed_inbound(tenant.server, tenant, unique_number(), provider_id=guid)
    assert_error(
        send(tenant, unique_number(), {"text": "r", "reply_to": {"guid": guid}}), 400, "reply_target_chat_mismatch"
    )


def test_one_to_one_parent_replied_from_a_group_is_chat_mismatch(tenant: Tenant) -> None:
    a = unique_number()
    parent = _parent(tenant, a)
    resp = send(tenant, f"{a},{unique_number()}", {"text": "r", "reply_to": {"message_id": parent}})
    assert_error(resp, 400, "reply_target_chat_mismatch")


# --- reply_target_device_mismatch and the parent's number ---------------------------------------------------


def test_reply_without_from_number_takes_the_parents_number(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    to = unique_number()
    parent = _parent(tenant, to, from_number=tenant.number)
    # The conversation's sticky number is now the second one ...
    accepted(send(tenant, to, {"text": "from second", "from_number": second}))
    # ... but a reply goes out on the parent's number.
    body = accepted(send(tenant, to, {"text": "r", "reply_to": {"message_id": parent}}))
    assert get_message(tenant, to, body["message_id"])["internal_id"] == tenant.number


def test_reply_from_another_number_is_400_device_mismatch(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    to = unique_number()
    parent = _parent(tenant, to, from_number=tenant.number)
    resp = send(tenant, to, {"text": "r", "from_number": second, "reply_to": {"message_id": parent}})
    assert_error(resp, 400, "reply_target_device_mismatch")


def test_reply_with_legacy_header_from_another_number_is_device_mismatch(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    to = unique_number()
    parent = _parent(tenant, to, from_number=tenant.number)
    resp = send(tenant, to, {"text": "r", "reply_to": {"message_id": parent}}, headers={"X-From-Number": second})
    assert_error(resp, 400, "reply_target_device_mismatch")


def test_reply_to_a_parent_on_a_number_outside_the_keys_pool_is_device_mismatch(tenant: Tenant) -> None:
    to = unique_number()
    parent = _parent(tenant, to)
    # A second key of the same organization whose pool holds only its own number.
    other_key = add_key(tenant.server, tenant, "restricted")
    configure(tenant.server, tenant.number, key=tenant.key_prefix)
    add_sender(tenant.server, tenant, key=other_key.prefix)
    with key_client(tenant.server, other_key.api_key) as c:
        resp = send(tenant, to, {"text": "r", "reply_to": {"message_id": parent}}, client=c)
    assert_error(resp, 400, "reply_target_device_mismatch")


# --- reply_target_expired -------------------------------------------------------------------------------------


def test_parent_older_than_30_days_is_400_expired(tenant: Tenant) -> None:
    to = unique_number()
    parent = _parent(tenant, to)
    update_message(tenant.server, parent, time_sent=now_ms() - 31 * DAY_MS)
    err = assert_error(send(tenant, to, {"text": "r", "reply_to": {"message_id": parent}}), 400, "reply_target_expired")
    assert err["message"] == "You can only reply to messages from the last 30 days"


def test_parent_29_days_old_is_accepted(tenant: Tenant) -> None:
    to = unique_number()
    parent = _parent(tenant, to)
    update_message(tenant.server, parent, time_sent=now_ms() - 29 * DAY_MS)
    accepted(send(tenant, to, {"text": "r", "reply_to": {"message_id": parent}}))


def test_old_parent_found_by_guid_is_expired(tenant: Tenant) -> None:
    to = unique_number()
    guid = f"GUID-OLD-{now_ms()}"
    seed_inbound(tenant.server, tenant, to, provider_id=guid, time_sent=now_ms() - 40 * DAY_MS)
    assert_error(send(tenant, to, {"text": "r", "reply_to": {"guid": guid}}), 400, "reply_target_expired")


# --- reply_target_not_supported -----------------------------------------------------------------------------


def test_reply_on_a_text_array_is_400_not_supported(tenant: Tenant) -> None:
    to = unique_number()
    parent = _parent(tenant, to)
    with pytest.raises(blooio.BadRequestError) as exc:
        sdk(tenant).chats.messages.send(to, text=["a", "b"], extra_body={"reply_to": {"message_id": parent}})
    assert exc.value.body["code"] == "reply_target_not_supported"  # type: ignore[index]


def test_reply_on_a_balloon_batch_is_400_not_supported(tenant: Tenant) -> None:
    to = unique_number()
    parent = _parent(tenant, to)
    body = {
        "parts": [{"text": "https://example.com/a", "link_preview": {}}],
        "reply_to": {"message_id": parent},
    }
    assert_error(send(tenant, to, body), 400, "reply_target_not_supported")


def test_reply_on_a_multipart_send_is_accepted(tenant: Tenant) -> None:
    to = unique_number()
    parent = _parent(tenant, to)
    accepted(send(tenant, to, {"parts": [{"text": "a"}, {"text": "b"}], "reply_to": {"message_id": parent}}))


@pytest.mark.parametrize("transport", ["twilio", "hybrid"])
def test_reply_on_twilio_or_hybrid_is_400_not_supported(tenant: Tenant, transport: str) -> None:
    t = new_tenant(tenant.server, transport=transport)
    to = unique_number()
    parent = _parent(t, to)
    assert_error(send(t, to, {"text": "r", "reply_to": {"message_id": parent}}), 400, "reply_target_not_supported")
    assert_error(send(t, to, {"text": "r", "reply_to": {"guid": "whatever"}}), 400, "reply_target_not_supported")


def test_refused_reply_leaves_nothing_behind(tenant: Tenant) -> None:
    to = unique_number()
    parent = _parent(tenant, to)
    update_message(tenant.server, parent, time_sent=now_ms() - 31 * DAY_MS)
    send(tenant, to, {"text": "r", "reply_to": {"message_id": parent}})
    assert len(rows(tenant.server, m.messages, m.messages.c.organization_id == tenant.organization_id)) == 1
