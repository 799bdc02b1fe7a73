"""Conversation reads (API.md §3.3, §3.5, §5.1–5.2): GET /chats, GET /chats/{id}, GET /chats/{id}/messages."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import Server, Tenant, make_tenant, unique_number
from tests.helpers import inbound, path_id, send


def get(t: Tenant, path: str, **params: Any) -> dict[str, Any]:
    with t.http() as http:
        r = http.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_chat_list_is_newest_first_with_accurate_totals(server: Server) -> None:
    t = make_tenant(server)
    handles = [unique_number() for _ in range(5)]
    for h in handles:
        send(t, h, text=f"hello {h}")
        time.sleep(0.005)  # distinct last-message times
    inbound(t, handles[1], "the second writes back")  # moves it to the top

    recent = get(t, "/chats")
    assert [c["id"] for c in recent["chats"]] == [handles[1], handles[4], handles[3], handles[2], handles[0]]
    assert recent["pagination"] == {"limit": 50, "offset": 0, "total": 5}
    oldest = get(t, "/chats", sort="oldest")
    assert [c["id"] for c in oldest["chats"]] == list(reversed([c["id"] for c in recent["chats"]]))

    page = get(t, "/chats", limit=2, offset=2)
    assert [c["id"] for c in page["chats"]] == [handles[3], handles[2]]
    assert page["pagination"] == {"limit": 2, "offset": 2, "total": 5}
    beyond = get(t, "/chats", offset=10)
    assert beyond["chats"] == [] and beyond["pagination"]["total"] == 5

    found = get(t, "/chats", q=handles[3][-7:])
    assert [c["id"] for c in found["chats"]] == [handles[3]] and found["pagination"]["total"] == 1

    sdk_page = t.sdk().chats.list(limit=3)
    assert [c.id for c in sdk_page.chats or []] == [c["id"] for c in recent["chats"][:3]]


def test_chat_fields_fill_counts_last_message_and_contact(tenant: Tenant) -> None:
    h = unique_number()
    first = send(tenant, h, text="one")
    send(tenant, h, text=["two", "three"])
    reply = inbound(tenant, h, "four")

    chat = get(tenant, f"/chats/{path_id(h)}")
    assert chat["id"] == h and chat["type"] == "phone" and chat["is_group"] is False
    assert chat["message_count"] == 4 and chat["outbound_count"] == 3 and chat["inbound_count"] == 1
    assert chat["contact"]["identifier"] == h and chat["contact"]["contact_id"].startswith("ct_")
    assert chat["last_message"]["message_id"] == reply and chat["last_message"]["direction"] == "inbound"
    assert chat["last_message"]["text"] == "four"
    assert chat["last_inbound_time"] >= chat["last_outbound_time"] >= chat["first_message_time"]
    first_msg = get(tenant, f"/chats/{path_id(h)}/messages/{first['message_id']}")
    assert chat["first_message_time"] == first_msg["time_sent"]

    sdk_chat = tenant.sdk().chats.retrieve(h)
    assert sdk_chat.message_count == 4 and sdk_chat.id == h


def test_group_chat_reads(tenant: Tenant) -> None:
    a, b = sorted([unique_number(), unique_number()])
    sent = send(tenant, f"{a},{b}", text="to the group")
    gid = sent["group_id"]
    by_list = get(tenant, f"/chats/{path_id(f'{b},{a}')}")
    by_id = get(tenant, f"/chats/{gid}")
    assert by_list["id"] == by_id["id"] == gid
    assert by_id["is_group"] is True and by_id["group_id"] == gid and by_id["member_count"] == 2
    assert by_id["contact"] is None
    messages = get(tenant, f"/chats/{gid}/messages")
    assert messages["chat_id"] == gid and [m["external_id"] for m in messages["messages"]] == [gid]


def test_message_list_order_filters_and_pagination(tenant: Tenant) -> None:
    h = unique_number()
    ids = send(tenant, h, text=["a", "b", "c"])["message_ids"]  # one acceptance time: ties keep acceptance order
    time.sleep(0.01)
    later = send(tenant, h, text="d")["message_id"]
    time.sleep(0.01)
    incoming = inbound(tenant, h, "e")
    everything = [*ids, later, incoming]

    desc = get(tenant, f"/chats/{path_id(h)}/messages")
    assert desc["chat_id"] == h
    assert [m["message_id"] for m in desc["messages"]] == list(reversed(everything))
    assert desc["pagination"] == {"limit": 50, "offset": 0, "total": 5}
    asc = get(tenant, f"/chats/{path_id(h)}/messages", sort="asc")
    assert [m["message_id"] for m in asc["messages"]] == everything
    assert [m["text"] for m in asc["messages"]] == ["a", "b", "c", "d", "e"]

    page = get(tenant, f"/chats/{path_id(h)}/messages", sort="asc", limit=2, offset=1)
    assert [m["message_id"] for m in page["messages"]] == everything[1:3]
    assert page["pagination"]["total"] == 5

    outbound = get(tenant, f"/chats/{path_id(h)}/messages", direction="outbound")
    assert {m["direction"] for m in outbound["messages"]} == {"outbound"} and outbound["pagination"]["total"] == 4
    only_in = get(tenant, f"/chats/{path_id(h)}/messages", direction="inbound")
    assert [m["message_id"] for m in only_in["messages"]] == [incoming] and only_in["pagination"]["total"] == 1

    t_later = next(m["time_sent"] for m in asc["messages"] if m["message_id"] == later)
    after = get(tenant, f"/chats/{path_id(h)}/messages", since=t_later, sort="asc")
    assert [m["message_id"] for m in after["messages"]] == [incoming] and after["pagination"]["total"] == 1
    before = get(tenant, f"/chats/{path_id(h)}/messages", until=t_later, sort="asc")
    assert [m["message_id"] for m in before["messages"]] == ids and before["pagination"]["total"] == 3

    item = asc["messages"][0]
    assert item["external_id"] == h and item["internal_id"] == tenant.number and item["direction"] == "outbound"
    assert set(item) >= {"message_id", "sender", "attachments", "reactions", "time_sent", "time_delivered", "status"}
    sdk_list = tenant.sdk().chats.messages.list(h, sort="asc", limit=2)
    assert [m.message_id for m in sdk_list.messages or []] == everything[:2]


def test_reads_are_walled_per_organization_and_validated(tenant: Tenant, other_tenant: Tenant) -> None:
    h = unique_number()
    mid = send(tenant, h, text="private")["message_id"]
    with other_tenant.http() as http:
        assert http.get(f"/chats/{path_id(h)}").status_code == 404
        assert http.get(f"/chats/{path_id(h)}/messages").status_code == 404
        assert http.get(f"/chats/{path_id(h)}/messages/{mid}").status_code == 404
        assert http.get("/chats").json()["pagination"]["total"] == 0
    with tenant.http() as http:
        for params in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"sort": "sideways"}, {"direction": "up"}):
            r = http.get(f"/chats/{path_id(h)}/messages", params=params)
            assert r.status_code == 400 and r.json()["code"] == "invalid_request", params
        assert http.get("/chats", params={"sort": "newest"}).status_code == 400
        assert http.get(f"/chats/{path_id(unique_number())}").json()["code"] == "not_found"


def test_integers_too_big_for_the_database_are_400_not_500(tenant: Tenant) -> None:
    h = unique_number()
    send(tenant, h, text="x")
    huge = str(2**64)
    with tenant.http() as http:
        for path, params in (
            ("/chats", {"offset": huge}),
            (f"/chats/{path_id(h)}/messages", {"offset": huge}),
            (f"/chats/{path_id(h)}/messages", {"since": huge}),
            (f"/chats/{path_id(h)}/messages", {"until": huge}),
        ):
            r = http.get(path, params=params)
            assert r.status_code == 400 and r.json()["code"] == "invalid_request", (path, params, r.text)
        r = http.post("/webhooks", json={"webhook_url": "http://127.0.0.1:9/big", "valid_until": 2**70})
        assert r.status_code == 400 and r.json()["code"] == "invalid_request"


def test_every_page_is_the_slice_of_the_whole_list_from_either_end(tenant: Tenant) -> None:
    # Pages past the middle are read from the other end of the index: each must still be the exact slice.
    h = unique_number()
    send(tenant, h, text=[f"m{i}" for i in range(5)])  # five messages with one acceptance time
    for i in range(4):
        send(tenant, h, text=f"n{i}")
        if i % 2:
            inbound(tenant, h, f"in{i}")
    for sort, direction in (("desc", None), ("asc", None), ("desc", "outbound"), ("asc", "inbound")):
        extra = {"direction": direction} if direction else {}
        whole = get(tenant, f"/chats/{path_id(h)}/messages", sort=sort, limit=200, **extra)
        ids = [m["message_id"] for m in whole["messages"]]
        assert whole["pagination"]["total"] == len(ids)
        for limit in (1, 3, 4, 50):
            for offset in range(len(ids) + 2):
                page = get(tenant, f"/chats/{path_id(h)}/messages", sort=sort, limit=limit, offset=offset, **extra)
                got = [m["message_id"] for m in page["messages"]]
                assert got == ids[offset : offset + limit], (sort, direction, limit, offset)
                assert page["pagination"] == {"limit": limit, "offset": offset, "total": len(ids)}
