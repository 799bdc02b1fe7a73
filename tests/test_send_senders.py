"""Sender choice, plans and quotas on ``POST /chats/{chatId}/messages``
(API.md §4.7, §4.9; DECISIONS.md §5, §10, §11).
"""

from __future__ import annotations

import blooio
import pytest

from openbloo.db import models as m
from tests.conftest import Server, Tenant, unique_number
from tests.test_send_support import (
    accepted,
    add_key,
    add_sender,
    assert_error,
    configure,
    get_message,
    key_client,
    new_tenant,
    number_id,
    rows,
    sdk,
    seed_inbound,
    send,
    wait_key_cache,
)


def _sender(t: Tenant, to: str, message_id: str) -> str:
    return str(get_message(t, to, message_id)["internal_id"])


# --- from_number and its legacy spellings (DECISIONS.md §10) ------------------------------------------------


def test_from_number_through_sdk_picks_the_sender(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    to = unique_number()
    resp = sdk(tenant).chats.messages.send(to, text="hi", from_number=second)
    assert _sender(tenant, to, resp.message_id or "") == second


def test_legacy_camel_case_from_number(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    to = unique_number()
    body = accepted(send(tenant, to, {"text": "hi", "fromNumber": second}))
    assert _sender(tenant, to, body["message_id"]) == second


def test_legacy_x_from_number_header(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    to = unique_number()
    body = accepted(send(tenant, to, {"text": "hi"}, headers={"X-From-Number": second}))
    assert _sender(tenant, to, body["message_id"]) == second


def test_body_from_number_wins_over_legacy_forms(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    to = unique_number()
    body = accepted(
        send(
            tenant,
            to,
            {"text": "hi", "from_number": second, "fromNumber": tenant.number},
            headers={"X-From-Number": tenant.number},
        )
    )
    assert _sender(tenant, to, body["message_id"]) == second


def test_from_number_in_national_form_is_normalized(tenant: Tenant) -> None:
    to = unique_number()
    national = tenant.number[2:]  # +1XXXXXXXXXX -> XXXXXXXXXX
    body = accepted(send(tenant, to, {"text": "hi", "from_number": national}))
    assert _sender(tenant, to, body["message_id"]) == tenant.number


def test_from_number_outside_the_pool_is_403(tenant: Tenant) -> None:
    with pytest.raises(blooio.PermissionDeniedError) as exc:
        sdk(tenant).chats.messages.send(unique_number(), text="hi", from_number=unique_number())
    assert exc.value.body["code"] == "from_number_not_allowed"  # type: ignore[index]


def test_from_number_of_another_org_is_403(tenant: Tenant, other_tenant: Tenant) -> None:
    resp = send(tenant, unique_number(), {"text": "hi", "from_number": other_tenant.number})
    assert_error(resp, 403, "from_number_not_allowed")
    resp = send(tenant, unique_number(), {"text": "hi"}, headers={"X-From-Number": other_tenant.number})
    assert_error(resp, 403, "from_number_not_allowed")


def test_from_number_restricted_to_another_key_is_403(tenant: Tenant) -> None:
    other = add_key(tenant.server, tenant, "other")
    restricted = add_sender(tenant.server, tenant, key=other.prefix)
    assert_error(
        send(tenant, unique_number(), {"text": "hi", "from_number": restricted}), 403, "from_number_not_allowed"
    )


def test_from_number_that_is_not_a_phone_is_400(tenant: Tenant) -> None:
    assert_error(send(tenant, unique_number(), {"text": "hi", "from_number": "me@example.com"}), 400, "invalid_request")


def test_inactive_from_number_is_503(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    configure(tenant.server, second, is_active=False)
    assert_error(send(tenant, unique_number(), {"text": "hi", "from_number": second}), 503, "no_active_number")


# --- automatic choice: sticky, then least recently used -------------------------------------------------------


def test_least_recently_used_number_rotates(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    a, b, c = unique_number(), unique_number(), unique_number()
    first = accepted(send(tenant, a, {"text": "1"}))
    other = accepted(send(tenant, b, {"text": "2"}))
    third = accepted(send(tenant, c, {"text": "3"}))
    used = [
        _sender(tenant, a, first["message_id"]),
        _sender(tenant, b, other["message_id"]),
        _sender(tenant, c, third["message_id"]),
    ]
    assert used == [tenant.number, second, tenant.number]


def test_conversation_keeps_its_number(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    x, y = unique_number(), unique_number()
    accepted(send(tenant, x, {"text": "x1"}))  # first number
    accepted(send(tenant, y, {"text": "y1"}))  # second number (least recently used)
    again = accepted(send(tenant, y, {"text": "y2"}))  # sticky: second again, though the first is older
    assert _sender(tenant, y, again["message_id"]) == second


def test_explicit_from_number_moves_the_sticky_number(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    x = unique_number()
    accepted(send(tenant, x, {"text": "1"}))
    accepted(send(tenant, x, {"text": "2", "from_number": second}))
    body = accepted(send(tenant, x, {"text": "3"}))
    assert _sender(tenant, x, body["message_id"]) == second


def test_multi_recipient_group_keeps_its_number(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    ids = f"{unique_number()},{unique_number()}"
    first = accepted(send(tenant, ids, {"text": "1"}))
    accepted(send(tenant, unique_number(), {"text": "elsewhere"}))  # second number
    accepted(send(tenant, unique_number(), {"text": "elsewhere"}))  # first number again ...
    again = accepted(send(tenant, ids, {"text": "2"}))  # ... yet the group stays on its number
    assert again["group_id"] == first["group_id"] and again["group_created"] is False
    assert _sender(tenant, first["group_id"], again["message_id"]) == _sender(
        tenant, first["group_id"], first["message_id"]
    )
    assert second in {tenant.number, second}


def test_multi_recipient_with_another_from_number_gets_its_own_group(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    ids = f"{unique_number()},{unique_number()}"
    first = accepted(send(tenant, ids, {"text": "1", "from_number": tenant.number}))
    other = accepted(send(tenant, ids, {"text": "2", "from_number": second}))
    assert other["group_created"] is True and other["group_id"] != first["group_id"]
    same = accepted(send(tenant, ids, {"text": "3", "from_number": second}))
    assert same["group_created"] is False and same["group_id"] == other["group_id"]


def test_inactive_sticky_number_falls_back_to_an_active_one(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    x = unique_number()
    accepted(send(tenant, x, {"text": "1", "from_number": second}))
    configure(tenant.server, second, is_active=False)
    wait_key_cache()
    body = accepted(send(tenant, x, {"text": "2"}))
    assert _sender(tenant, x, body["message_id"]) == tenant.number


def test_no_active_number_is_503(server: Server) -> None:
    t = new_tenant(server)
    configure(t.server, t.number, is_active=False)
    with pytest.raises(blooio.InternalServerError) as exc:
        sdk(t).chats.messages.send(unique_number(), text="hi")
    assert exc.value.status_code == 503
    assert exc.value.body["code"] == "no_active_number"  # type: ignore[index]


def test_key_without_numbers_is_503(tenant: Tenant) -> None:
    other = add_key(tenant.server, tenant, "empty")
    configure(tenant.server, tenant.number, key=tenant.key_prefix)  # the only number is now the first key's
    with key_client(tenant.server, other.api_key) as c:
        assert_error(send(tenant, unique_number(), {"text": "hi"}, client=c), 503, "no_active_number")


# --- inbound-only plan (DECISIONS.md §11) -------------------------------------------------------------------


def test_inbound_plan_refuses_a_contact_who_never_wrote(server: Server) -> None:
    t = new_tenant(server, plan_kind="inbound")
    to = unique_number()
    with pytest.raises(blooio.PermissionDeniedError) as exc:
        sdk(t).chats.messages.send(to, text="hi")
    body = exc.value.body
    assert body["code"] == "inbound_only_no_prior_inbound"  # type: ignore[index]
    assert body["allocation_id"] == t.allocation_id  # type: ignore[index]
    assert body["external_id"] == to  # type: ignore[index]
    for table in (m.messages, m.chats, m.contacts):
        assert rows(t.server, table, table.c.organization_id == t.organization_id) == []


def test_inbound_plan_allows_a_contact_who_wrote_first(server: Server) -> None:
    t = new_tenant(server, plan_kind="inbound")
    to = unique_number()
    seed_inbound(t.server, t, to)
    body = accepted(send(t, to, {"text": "thanks for writing"}))
    assert _sender(t, to, body["message_id"]) == t.number


def test_inbound_plan_counts_only_inbound_on_that_number(tenant: Tenant) -> None:
    inbound = add_sender(tenant.server, tenant, plan_kind="inbound")
    to = unique_number()
    seed_inbound(tenant.server, tenant, to, via=tenant.number)  # wrote to the other number, not this one
    resp = send(tenant, to, {"text": "hi", "from_number": inbound})
    body = assert_error(resp, 403, "inbound_only_no_prior_inbound")
    assert body["allocation_id"] == number_id(tenant.server, inbound)
    assert body["external_id"] == to


def test_inbound_plan_refusing_a_new_group_names_the_participants(server: Server) -> None:
    t = new_tenant(server, plan_kind="inbound")
    a, b = sorted([unique_number(), unique_number()])
    body = assert_error(send(t, f"{b},{a}", {"text": "hi"}), 403, "inbound_only_no_prior_inbound")
    assert body["allocation_id"] == t.allocation_id
    # No group was created, so the recipient is the participant list, not the id of a group that never existed.
    assert body["external_id"] == f"{a},{b}"
    assert rows(server, m.groups, m.groups.c.organization_id == t.organization_id) == []


# --- attachment as the first message (DECISIONS.md §5) --------------------------------------------------------


def test_attachment_only_first_message_is_400(tenant: Tenant) -> None:
    to = unique_number()
    with pytest.raises(blooio.BadRequestError) as exc:
        sdk(tenant).chats.messages.send(to, attachments=["https://example.com/a.png"])
    assert exc.value.body["code"] == "attachment_first_message_not_allowed"  # type: ignore[index]


def test_attachment_only_multipart_first_message_is_400(tenant: Tenant) -> None:
    resp = send(tenant, unique_number(), {"parts": [{"url": "https://example.com/a.png"}]})
    assert_error(resp, 400, "attachment_first_message_not_allowed")


def test_attachment_with_text_as_first_message_is_accepted(tenant: Tenant) -> None:
    accepted(send(tenant, unique_number(), {"text": "look", "attachments": ["https://example.com/a.png"]}))
    accepted(send(tenant, unique_number(), {"parts": [{"text": "look"}, {"url": "https://example.com/a.png"}]}))


def test_attachment_only_after_an_inbound_message_is_accepted(tenant: Tenant) -> None:
    to = unique_number()
    seed_inbound(tenant.server, tenant, to)
    accepted(send(tenant, to, {"attachments": ["https://example.com/a.png"]}))


def test_attachment_only_first_message_on_twilio_is_accepted(server: Server) -> None:
    t = new_tenant(server, transport="twilio")
    accepted(send(t, unique_number(), {"attachments": ["https://example.com/a.png"]}))


@pytest.mark.parametrize("transport", ["bluebubbles", "hybrid"])
def test_attachment_only_first_message_on_other_imessage_transports_is_400(server: Server, transport: str) -> None:
    t = new_tenant(server, transport=transport)
    assert_error(
        send(t, unique_number(), {"attachments": ["https://example.com/a.png"]}),
        400,
        "attachment_first_message_not_allowed",
    )


def test_attachment_only_to_a_new_group_is_400(tenant: Tenant) -> None:
    resp = send(tenant, f"{unique_number()},{unique_number()}", {"attachments": ["https://example.com/a.png"]})
    assert_error(resp, 400, "attachment_first_message_not_allowed")
    assert rows(tenant.server, m.groups, m.groups.c.organization_id == tenant.organization_id) == []


# --- daily outbound limit -------------------------------------------------------------------------------------


def test_daily_limit_is_429_outbound_limit_reached(tenant: Tenant) -> None:
    configure(tenant.server, tenant.number, daily_limit=2)
    to = unique_number()
    accepted(send(tenant, to, {"text": "1"}))
    accepted(send(tenant, unique_number(), {"text": "2"}))
    resp = send(tenant, to, {"text": "3"})
    body = assert_error(resp, 429, "outbound_limit_reached")
    assert resp.headers["x-should-retry"] == "false"
    assert body["limit"] == 2 and body["current"] == 2 and body["mode"] == "per_number"
    assert body["allocation_id"] == tenant.allocation_id and body["sender_number"] == tenant.number
    assert len(rows(tenant.server, m.messages, m.messages.c.organization_id == tenant.organization_id)) == 2


def test_daily_limit_counts_every_message_of_a_fan_out(tenant: Tenant) -> None:
    configure(tenant.server, tenant.number, daily_limit=3)
    to = unique_number()
    accepted(send(tenant, to, {"text": ["a", "b"]}))
    body = assert_error(send(tenant, to, {"text": ["c", "d"]}), 429, "outbound_limit_reached")
    assert body["current"] == 2
    accepted(send(tenant, to, {"text": "e"}))


def test_daily_limit_429_is_not_retried_by_the_sdk(tenant: Tenant) -> None:
    configure(tenant.server, tenant.number, daily_limit=1)
    accepted(send(tenant, unique_number(), {"text": "1"}))
    client = sdk(tenant, max_retries=2)
    with pytest.raises(blooio.RateLimitError) as exc:
        client.chats.messages.send(unique_number(), text="2")
    assert exc.value.body["code"] == "outbound_limit_reached"  # type: ignore[index]
    assert exc.value.response.request.headers.get("x-stainless-retry-count") == "0"


# --- new-conversation cap -------------------------------------------------------------------------------------


def test_new_conversation_cap_is_429(tenant: Tenant) -> None:
    configure(tenant.server, tenant.number, new_conversation_cap=1)
    known = unique_number()
    accepted(send(tenant, known, {"text": "1"}))
    resp = send(tenant, unique_number(), {"text": "2"})
    body = assert_error(resp, 429, "new_conversation_limit_reached")
    assert resp.headers["x-should-retry"] == "false"
    assert body["cap"] == 1 and body["current"] == 1 and isinstance(body["plan_id"], str) and body["plan_id"]
    # An existing conversation is not new: still allowed.
    accepted(send(tenant, known, {"text": "3"}))


def test_new_conversation_cap_does_not_count_contacts_who_wrote_first(tenant: Tenant) -> None:
    configure(tenant.server, tenant.number, new_conversation_cap=1)
    accepted(send(tenant, unique_number(), {"text": "1"}))
    wrote = unique_number()
    seed_inbound(tenant.server, tenant, wrote)
    accepted(send(tenant, wrote, {"text": "reply"}))


def test_new_conversation_cap_plan_id_is_the_plan(server: Server) -> None:
    t = new_tenant(server, plan_kind="trial")
    configure(t.server, t.number, new_conversation_cap=1)
    accepted(send(t, unique_number(), {"text": "1"}))
    body = assert_error(send(t, unique_number(), {"text": "2"}), 429, "new_conversation_limit_reached")
    assert body["plan_id"] == "trial"


# --- share_contact --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("plan", ["shared", "trial"])
def test_share_contact_on_a_plan_without_contact_card_is_403(server: Server, plan: str) -> None:
    t = new_tenant(server, plan_kind=plan)
    resp = send(t, unique_number(), {"text": "hi", "share_contact": True})
    assert resp.status_code == 403, resp.text
    assert resp.json()["code"] == "share_contact_not_allowed"


def test_share_contact_on_a_dedicated_plan_is_accepted(server: Server) -> None:
    t = new_tenant(server, plan_kind="dedicated")
    accepted(send(t, unique_number(), {"text": "hi", "share_contact": True}))
