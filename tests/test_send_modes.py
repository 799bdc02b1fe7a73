"""``POST /chats/{chatId}/messages``: addressing forms, body modes and their response shapes, durable storage,
the message reads and org isolation (seed; API.md §1.7, §3.5, §4.1–4.7, §5.1; DECISIONS.md §1, §6, §8, §9, §17).
"""

from __future__ import annotations

import threading

import blooio
import pytest

from openbloo.db import models as m
from openbloo.ids import now_ms
from tests.conftest import Server, Tenant, unique_number
from tests.helpers import subscribe
from tests.receiver import Receiver
from tests.test_send_support import (
    accepted,
    add_key,
    add_sender,
    assert_error,
    client_for,
    enc,
    get_message,
    http,
    insert_group,
    message_row,
    parked_tenant,
    rows,
    sdk,
    send,
)

# --- addressing ---------------------------------------------------------------------------------------------


def test_sdk_raw_plus_phone_returns_single_message_id(tenant: Tenant) -> None:
    to = unique_number()
    raw = sdk(tenant).chats.messages.with_raw_response.send(to, text="hello")
    assert raw.status_code == 202
    resp = raw.parse()
    assert resp.status == "queued"
    assert resp.message_id is not None and resp.message_id.startswith("msg_")
    assert resp.message_ids is None and resp.count is None and resp.group_id is None
    assert set(raw.http_response.json()) == {"status", "message_id"}
    assert get_message(tenant, to, resp.message_id)["chat_id"] == to


def test_raw_plus_in_path_is_a_plus_not_a_space(tenant: Tenant) -> None:
    to = unique_number()
    body = accepted(send(tenant, to, {"text": "hi"}, encoded=False))
    assert get_message(tenant, to, body["message_id"])["chat_id"] == to


def test_percent_encoded_plus_addresses_the_same_chat(tenant: Tenant) -> None:
    to = unique_number()
    with http(tenant) as c:
        first = accepted(c.post(f"/chats/%2B{to[1:]}/messages", json={"text": "one"}))
        second = accepted(c.post(f"/chats/{to}/messages", json={"text": "two"}))
    chats = rows(tenant.server, m.chats, m.chats.c.organization_id == tenant.organization_id)
    assert [c.chat_key for c in chats] == [to]
    assert message_row(tenant.server, first["message_id"]).chat_id == chats[0].id
    assert message_row(tenant.server, second["message_id"]).chat_id == chats[0].id


def test_national_form_normalizes_to_e164(tenant: Tenant) -> None:
    body = accepted(send(tenant, "(555) 201-7788", {"text": "hi"}))
    assert get_message(tenant, "+15552017788", body["message_id"])["chat_id"] == "+15552017788"


def test_email_is_lower_cased(tenant: Tenant) -> None:
    resp = sdk(tenant).chats.messages.send("John.Doe@Example.COM", text="hi")
    msg = get_message(tenant, "john.doe@example.com", resp.message_id or "")
    assert msg["chat_id"] == "john.doe@example.com"
    assert msg["contact"]["identifier"] == "john.doe@example.com"
    # Any spelling of the address reads the same chat.
    assert get_message(tenant, "JOHN.DOE@example.com", resp.message_id or "")["message_id"] == resp.message_id


@pytest.mark.parametrize("chat_id", ["not-a-number", "+1", "12", "abc@", "grp_", "grp_bad-id", "+15551234567,"])
def test_invalid_chat_id_is_400(tenant: Tenant, chat_id: str) -> None:
    assert_error(send(tenant, chat_id, {"text": "hi"}), 400, "invalid_chat_id")


@pytest.mark.parametrize("chat_id", ["911", "112", "999"])
def test_emergency_number_is_403(tenant: Tenant, chat_id: str) -> None:
    with pytest.raises(blooio.PermissionDeniedError) as exc:
        sdk(tenant).chats.messages.send(chat_id, text="help")
    assert exc.value.status_code == 403
    assert exc.value.body["code"] == "emergency_number_not_allowed"  # type: ignore[index]


def test_emergency_number_inside_a_list_is_403(tenant: Tenant) -> None:
    assert_error(send(tenant, f"{unique_number()},911", {"text": "hi"}), 403, "emergency_number_not_allowed")


# --- multi-recipient (unnamed groups, DECISIONS.md §9) ---------------------------------------------------------


def test_comma_list_creates_unnamed_group_then_reuses_it(tenant: Tenant) -> None:
    a, b = sorted([unique_number(), unique_number()])
    client = sdk(tenant)
    first = client.chats.messages.send(f"{b},{a}", text="hi all")  # raw "+" and "," as SDK 1.1.0 sends them
    assert first.message_id is not None
    assert first.group_id is not None and first.group_id.startswith("grp_")
    assert first.group_created is True
    assert first.participants == [a, b]
    # Same set in another order, with a duplicate and percent-encoded: the same group, not created again.
    again = accepted(send(tenant, f"{a},{b},{b}", {"text": "again"}))
    assert again["group_id"] == first.group_id
    assert again["group_created"] is False
    assert again["participants"] == [a, b]
    groups = rows(tenant.server, m.groups, m.groups.c.organization_id == tenant.organization_id)
    assert len(groups) == 1 and groups[0].name is None
    members = rows(tenant.server, m.group_members, m.group_members.c.group_id == first.group_id)
    assert sorted(r.identifier for r in members) == [a, b]
    # The message is readable through the group id and through the participant list.
    assert get_message(tenant, first.group_id, first.message_id)["chat_id"] == first.group_id
    assert get_message(tenant, f"{b},{a}", first.message_id)["message_id"] == first.message_id


def test_mixed_phone_and_email_list(tenant: Tenant) -> None:
    p = unique_number()
    body = accepted(send(tenant, f"Ann@Example.com,{p}", {"text": "hi"}))
    assert body["group_created"] is True
    assert body["participants"] == sorted([p, "ann@example.com"])


def test_list_of_one_after_dedup_is_a_one_to_one_chat(tenant: Tenant) -> None:
    p = unique_number()
    body = accepted(send(tenant, f"{p},{p}", {"text": "hi"}))
    assert set(body) == {"status", "message_id"}
    assert get_message(tenant, p, body["message_id"])["chat_id"] == p


def test_unnamed_groups_are_per_organization(tenant: Tenant, other_tenant: Tenant) -> None:
    ids = f"{unique_number()},{unique_number()}"
    mine = accepted(send(tenant, ids, {"text": "hi"}))
    theirs = accepted(send(other_tenant, ids, {"text": "hi"}))
    assert mine["group_created"] is True and theirs["group_created"] is True
    assert mine["group_id"] != theirs["group_id"]


def test_parallel_multi_recipient_sends_create_one_group(tenant: Tenant) -> None:
    ids = f"{unique_number()},{unique_number()},{unique_number()}"
    barrier = threading.Barrier(20)
    results: list[dict[str, object]] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with http(tenant) as c:
                barrier.wait()
                resp = send(tenant, ids, {"text": f"hello {i}"}, client=c)
            results.append(accepted(resp))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors, errors
    assert len(results) == 20
    assert len({r["group_id"] for r in results}) == 1
    assert sum(1 for r in results if r["group_created"] is True) == 1
    groups = rows(tenant.server, m.groups, m.groups.c.organization_id == tenant.organization_id)
    assert len(groups) == 1
    chats = rows(tenant.server, m.chats, m.chats.c.organization_id == tenant.organization_id)
    assert len(chats) == 1
    msgs = rows(tenant.server, m.messages, m.messages.c.organization_id == tenant.organization_id)
    assert len(msgs) == 20 and {r.group_id for r in msgs} == {groups[0].id}


# --- explicit groups (DECISIONS.md §8) -----------------------------------------------------------------------


def test_linked_group_send(tenant: Tenant) -> None:
    group_id = insert_group(tenant.server, tenant, chat_guid=f"iMessage;+;chat{now_ms()}")
    resp = sdk(tenant).chats.messages.with_raw_response.send(group_id, text="hello team")
    assert resp.status_code == 202
    body = resp.http_response.json()
    assert body["status"] == "queued" and body["message_id"].startswith("msg_")
    msg = get_message(tenant, group_id, body["message_id"])
    assert msg["chat_id"] == group_id
    assert message_row(tenant.server, body["message_id"]).group_id == group_id


def test_unlinked_group_with_members_is_sent_and_creates_its_chat(tenant: Tenant) -> None:
    group_id = insert_group(tenant.server, tenant, members=(unique_number(), unique_number()))
    body = accepted(send(tenant, group_id, {"text": "first message"}))
    assert get_message(tenant, group_id, body["message_id"])["chat_id"] == group_id


def test_group_without_chat_guid_and_members_is_400_group_not_linked(tenant: Tenant) -> None:
    group_id = insert_group(tenant.server, tenant)
    assert_error(send(tenant, group_id, {"text": "hi"}), 400, "group_not_linked")
    assert rows(tenant.server, m.messages, m.messages.c.organization_id == tenant.organization_id) == []


def test_unknown_group_is_404_group_not_found(tenant: Tenant) -> None:
    assert_error(send(tenant, "grp_doesnotexist123", {"text": "hi"}), 404, "group_not_found")


def test_deleted_group_is_404(tenant: Tenant) -> None:
    group_id = insert_group(tenant.server, tenant, chat_guid=f"iMessage;+;chat{now_ms()}", deleted=True)
    assert_error(send(tenant, group_id, {"text": "hi"}), 404, "group_not_found")


def test_group_sends_from_the_number_it_lives_on(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    group_id = insert_group(tenant.server, tenant, chat_guid=f"iMessage;+;chat{now_ms()}", number=second)
    accepted(send(tenant, unique_number(), {"text": "uses the first number"}))
    body = accepted(send(tenant, group_id, {"text": "hi"}))
    assert get_message(tenant, group_id, body["message_id"])["internal_id"] == second
    body = accepted(send(tenant, group_id, {"text": "hi", "from_number": second}))
    assert get_message(tenant, group_id, body["message_id"])["internal_id"] == second


def test_group_on_another_number_refuses_a_different_from_number(tenant: Tenant) -> None:
    second = add_sender(tenant.server, tenant)
    group_id = insert_group(tenant.server, tenant, chat_guid=f"iMessage;+;chat{now_ms()}", number=second)
    resp = send(tenant, group_id, {"text": "hi", "from_number": tenant.number})
    assert_error(resp, 403, "from_number_not_allowed")


def test_group_on_a_number_outside_the_keys_pool_is_403(tenant: Tenant) -> None:
    other_key = add_key(tenant.server, tenant, "other")
    theirs = add_sender(tenant.server, tenant, key=other_key.prefix)
    group_id = insert_group(tenant.server, tenant, chat_guid=f"iMessage;+;chat{now_ms()}", number=theirs)
    assert_error(send(tenant, group_id, {"text": "hi"}), 403, "from_number_not_allowed")


def test_mention_of_an_explicit_group_member(tenant: Tenant) -> None:
    a, b = unique_number(), unique_number()
    group_id = insert_group(tenant.server, tenant, members=(a, b))
    accepted(send(tenant, group_id, {"parts": [{"text": "Ann", "mention": a}]}))
    err = send(tenant, group_id, {"parts": [{"text": "Zed", "mention": unique_number()}]})
    assert_error(err, 400, "invalid_request")


def test_group_of_another_org_is_404(tenant: Tenant, other_tenant: Tenant) -> None:
    group_id = insert_group(tenant.server, other_tenant, chat_guid=f"iMessage;+;chat{now_ms()}")
    assert_error(send(tenant, group_id, {"text": "hi"}), 404, "group_not_found")


# --- body modes and response shapes (API.md §4.2–4.4, §4.7; DECISIONS.md §6, §17) ----------------------------


def test_text_array_fans_out_to_message_ids(tenant: Tenant) -> None:
    to = unique_number()
    resp = sdk(tenant).chats.messages.with_raw_response.send(to, text=["one", "two", "three"])
    assert resp.status_code == 202
    body = resp.http_response.json()
    assert set(body) == {"status", "message_ids"}
    ids = body["message_ids"]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert [get_message(tenant, to, i)["text"] for i in ids] == ["one", "two", "three"]
    assert [message_row(tenant.server, i).seq for i in ids] == sorted(message_row(tenant.server, i).seq for i in ids)


def test_single_element_text_array_still_uses_message_ids(tenant: Tenant) -> None:
    body = accepted(send(tenant, unique_number(), {"text": ["only"]}))
    assert set(body) == {"status", "message_ids"} and len(body["message_ids"]) == 1


def test_attachments_as_url_strings_and_objects(tenant: Tenant) -> None:
    to = unique_number()
    resp = sdk(tenant).chats.messages.send(
        to,
        text="see attached",
        attachments=["https://example.com/a.png", {"url": "http://example.com/b.pdf", "name": "b.pdf"}],
    )
    assert resp.message_id is not None and resp.message_ids is None
    msg = get_message(tenant, to, resp.message_id)
    assert msg["text"] == "see attached"
    assert msg["attachments"] == [
        {"url": "https://example.com/a.png", "name": None},
        {"url": "http://example.com/b.pdf", "name": "b.pdf"},
    ]


def test_attachments_only_after_a_text_is_a_single_message(tenant: Tenant) -> None:
    to = unique_number()
    accepted(send(tenant, to, {"text": "first"}))
    body = accepted(send(tenant, to, {"attachments": ["https://example.com/photo.jpg"]}))
    msg = get_message(tenant, to, body["message_id"])
    assert msg["text"] is None
    assert msg["attachments"] == [{"url": "https://example.com/photo.jpg", "name": None}]


def test_lone_audio_attachment_is_marked_as_voice_memo(tenant: Tenant) -> None:
    to = unique_number()
    accepted(send(tenant, to, {"text": "first"}))
    body = accepted(send(tenant, to, {"attachments": ["https://example.com/memo.m4a"]}))
    assert message_row(tenant.server, body["message_id"]).options["voice_memo"] is True


def test_multipart_parts_is_one_message(tenant: Tenant) -> None:
    to = unique_number()
    resp = sdk(tenant).chats.messages.with_raw_response.send(
        to,
        parts=[
            {"text": "Here is the file"},
            {"url": "https://example.com/report.pdf", "name": "report.pdf"},
            {"text": "and a link https://example.com"},
        ],
    )
    assert resp.status_code == 202
    body = resp.http_response.json()
    assert set(body) == {"status", "message_id"}
    row = message_row(tenant.server, body["message_id"])
    assert [p.get("type") for p in row.parts] == ["text", "attachment", "text"]
    assert row.options["mode"] == "multipart"
    msg = get_message(tenant, to, body["message_id"])
    assert msg["attachments"] == [{"url": "https://example.com/report.pdf", "name": "report.pdf"}]


def test_url_balloon_batch_returns_message_ids_and_count(tenant: Tenant) -> None:
    to = unique_number()
    resp = sdk(tenant).chats.messages.with_raw_response.send(
        to,
        parts=[
            {"text": "https://example.com/one", "link_preview": {"title": "One"}},
            {"text": "https://example.com/two"},
            {"text": "http://example.com/three", "link_preview": {"image_url": "https://example.com/i.png"}},
        ],
    )
    assert resp.status_code == 202
    body = resp.http_response.json()
    assert set(body) == {"status", "message_ids", "count"}
    assert body["count"] == 3 and len(body["message_ids"]) == 3
    texts = [get_message(tenant, to, i)["text"] for i in body["message_ids"]]
    assert texts == ["https://example.com/one", "https://example.com/two", "http://example.com/three"]
    first = message_row(tenant.server, body["message_ids"][0])
    assert first.link_preview == {"title": "One", "image_url": None}
    assert message_row(tenant.server, body["message_ids"][1]).link_preview is None


def test_top_level_link_preview_on_a_bare_url(tenant: Tenant) -> None:
    to = unique_number()
    resp = sdk(tenant).chats.messages.send(
        to, text="https://example.com/post", link_preview={"title": "Post", "image_url": "https://example.com/p.jpg"}
    )
    row = message_row(tenant.server, resp.message_id or "")
    assert row.link_preview == {"title": "Post", "image_url": "https://example.com/p.jpg"}


def test_mention_of_a_group_participant(tenant: Tenant) -> None:
    a, b = unique_number(), unique_number()
    body = accepted(
        send(
            tenant,
            f"{a},{b}",
            {"parts": [{"text": "Ann", "mention": a}, {"text": " please look"}]},
        )
    )
    row = message_row(tenant.server, body["message_id"])
    assert row.options["mentions"] == [a]
    assert row.parts[0] == {"type": "text", "text": "Ann", "mention": a}


def test_mention_of_the_one_to_one_counterpart(tenant: Tenant) -> None:
    to = unique_number()
    accepted(send(tenant, to, {"parts": [{"text": "You", "mention": to}]}))


def test_share_contact_and_typing_indicator_are_stored(tenant: Tenant) -> None:
    resp = sdk(tenant).chats.messages.send(unique_number(), text="hi", share_contact=True, use_typing_indicator=False)
    options = message_row(tenant.server, resp.message_id or "").options
    assert options["share_contact"] is True
    assert options["use_typing_indicator"] is False


def test_metadata_is_stored_and_returned(tenant: Tenant) -> None:
    to = unique_number()
    meta = {"order": 42, "tags": ["a", "b"], "nested": {"ok": True}}
    body = accepted(send(tenant, to, {"text": "hi", "metadata": meta}))
    assert get_message(tenant, to, body["message_id"])["metadata"] == meta


def test_metadata_of_exactly_1kb_is_accepted(tenant: Tenant) -> None:
    meta = {"k": "x" * 1016}  # {"k":"…"} serializes to 1024 bytes
    accepted(send(tenant, unique_number(), {"text": "hi", "metadata": meta}))


def test_unknown_body_fields_are_ignored(tenant: Tenant) -> None:
    accepted(send(tenant, unique_number(), {"text": "hi", "some_future_field": {"x": 1}}))


# --- durability (everything in one transaction before the 202) ----------------------------------------------


def test_accepted_send_has_message_job_and_event(server: Server, receiver: Receiver) -> None:
    t = parked_tenant(server)
    subscribe(t, receiver.url)  # a webhook that receives message.queued: the event is written with the send
    to = unique_number()
    before = now_ms()
    body = accepted(send(t, to, {"text": "durable"}, headers={"Idempotency-Key": "dur-1"}))
    after = now_ms()
    row = message_row(server, body["message_id"])
    assert row.direction == "outbound" and row.status == "queued" and row.protocol == "pending"
    assert before <= row.time_sent <= after
    assert row.number_id == t.allocation_id and row.text == "durable"
    assert row.job_state == "pending" and row.job_next_attempt_at is not None and row.conversation_id is not None
    events = rows(server, m.events, m.events.c.message_id == row.id)
    assert [e.type for e in events] == ["message.queued"]
    payload = events[0].payload
    assert payload["message_id"] == row.id and payload["external_id"] == to
    assert payload["internal_id"] == t.number and payload["status"] == "queued" and payload["protocol"] == "pending"
    keys = rows(server, m.idempotency_keys, m.idempotency_keys.c.organization_id == t.organization_id)
    assert [(k.key, k.response_status) for k in keys] == [("dur-1", 202)]
    conv = rows(server, m.conversations, m.conversations.c.id == row.conversation_id)
    assert len(conv) == 1 and conv[0].chat_id == row.chat_id and conv[0].number_id == t.allocation_id
    chat = rows(server, m.chats, m.chats.c.id == row.chat_id)[0]
    assert chat.chat_key == to and chat.outbound_count == 1 and chat.last_number_id == t.allocation_id


def test_simulator_send_is_queued_first(tenant: Tenant, receiver: Receiver) -> None:
    subscribe(tenant, receiver.url)
    # The dispatcher may already have sent it; the committed message.queued event records the accepted state.
    body = accepted(send(tenant, unique_number(), {"text": "hi"}))
    events = rows(tenant.server, m.events, m.events.c.message_id == body["message_id"])
    queued = [e.payload for e in events if e.type == "message.queued"]
    assert len(queued) == 1 and queued[0]["status"] == "queued" and queued[0]["protocol"] == "pending"
    assert message_row(tenant.server, body["message_id"]).job_state is not None


def test_text_array_writes_one_job_and_event_per_message(tenant: Tenant, receiver: Receiver) -> None:
    subscribe(tenant, receiver.url)
    body = accepted(send(tenant, unique_number(), {"text": ["a", "b"]}))
    for mid in body["message_ids"]:
        assert message_row(tenant.server, mid).job_state is not None
        # The dispatcher may already have sent it (message.sent): the accept wrote exactly one message.queued.
        events = rows(tenant.server, m.events, m.events.c.message_id == mid)
        assert [e.type for e in events if e.type == "message.queued"] == ["message.queued"]


def test_refused_send_leaves_nothing_behind(tenant: Tenant) -> None:
    assert_error(send(tenant, unique_number(), {"text": "x", "effect": "explode"}), 400, "invalid_effect")
    assert_error(send(tenant, "grp_unknown1", {"text": "x"}), 404, "group_not_found")
    for table in (m.messages, m.chats, m.contacts, m.groups):
        assert rows(tenant.server, table, table.c.organization_id == tenant.organization_id) == []


# --- reads (API.md §3.5, §5.1) --------------------------------------------------------------------------------


def test_get_message_full_shape(server: Server) -> None:
    tenant = parked_tenant(server)
    to = unique_number()
    sent = sdk(tenant).chats.messages.send(to, text="read me", extra_body={"effect": "Slam"})
    msg_id = sent.message_id or ""
    got = sdk(tenant).chats.messages.retrieve(msg_id, chat_id=to)
    assert got.message_id == msg_id and got.chat_id == to
    assert got.direction == "outbound" and got.text == "read me"
    assert got.internal_id == tenant.number
    assert got.contact is not None and got.contact.identifier == to and got.contact.contact_id.startswith("ct_")
    assert got.sender is None and got.reactions == [] and got.attachments == []
    assert got.status == "queued" and got.time_delivered is None and got.error is None
    raw = get_message(tenant, to, msg_id)
    assert raw["protocol"] == "pending" and raw["effect"] == "slam" and raw["reply_to"] is None
    assert isinstance(raw["time_sent"], int) and raw["time_sent"] > 1_600_000_000_000


def test_get_message_status(server: Server) -> None:
    tenant = parked_tenant(server)
    to = unique_number()
    msg_id = sdk(tenant).chats.messages.send(to, text="status?").message_id or ""
    status = sdk(tenant).chats.messages.with_raw_response.get_status(msg_id, chat_id=to).http_response.json()
    assert set(status) == {
        "message_id",
        "chat_id",
        "direction",
        "status",
        "protocol",
        "time_sent",
        "time_delivered",
        "error",
    }
    assert status["message_id"] == msg_id and status["chat_id"] == to
    assert status["direction"] == "outbound" and status["status"] == "queued" and status["protocol"] == "pending"
    assert status["time_delivered"] is None and status["error"] is None


def test_message_read_through_another_chat_is_404(tenant: Tenant) -> None:
    msg_id = sdk(tenant).chats.messages.send(unique_number(), text="x").message_id
    with http(tenant) as c:
        resp = c.get(f"/chats/{enc(unique_number())}/messages/{msg_id}")
    assert_error(resp, 404, "not_found")


def test_message_of_another_org_is_404(tenant: Tenant, other_tenant: Tenant) -> None:
    to = unique_number()
    msg_id = sdk(tenant).chats.messages.send(to, text="private").message_id
    with pytest.raises(blooio.NotFoundError):
        sdk(other_tenant).chats.messages.retrieve(msg_id or "", chat_id=to)
    with http(other_tenant) as c:
        assert_error(c.get(f"/chats/{enc(to)}/messages/{msg_id}"), 404, "not_found")
        assert_error(c.get(f"/chats/{enc(to)}/messages/{msg_id}/status"), 404, "not_found")


def test_unknown_message_is_404(tenant: Tenant) -> None:
    with http(tenant) as c:
        assert_error(c.get(f"/chats/{enc(unique_number())}/messages/msg_nope"), 404, "not_found")


def test_send_requires_auth(tenant: Tenant) -> None:
    with client_for(tenant.server, None) as c:
        assert_error(c.post(f"/chats/{enc(unique_number())}/messages", json={"text": "x"}), 401, "unauthorized")
