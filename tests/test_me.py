"""``GET /me`` and ``GET /me/numbers`` through the official SDK (API.md §3.1–3.2)."""

from __future__ import annotations

import datetime as dt

from tests.conftest import Tenant, make_number


def test_me_retrieve_describes_key_org_and_devices(tenant: Tenant) -> None:
    me = tenant.sdk().me.retrieve()
    assert me.valid is True
    assert me.auth_type == "api_key"
    assert me.api_key == tenant.api_key
    assert me.organization_id == tenant.organization_id
    assert me.organization is not None and me.organization.name == tenant.org
    assert isinstance(me.organization.created_at, int)
    assert [d.phone_number for d in me.devices or []] == [tenant.number]
    assert me.devices[0].is_active is True
    assert me.usage is not None and me.usage.outbound_messages == 0 and me.usage.inbound_messages == 0


def test_me_numbers_lists_pool_with_plan_kind(tenant: Tenant) -> None:
    extra = tenant.add_number(plan_kind="inbound")
    numbers = tenant.sdk().me.numbers.list().numbers or []
    by_phone = {n.phone_number: n for n in numbers}
    assert set(by_phone) == {tenant.number, extra["phone_number"]}
    assert by_phone[extra["phone_number"]].plan_kind == "inbound"
    assert by_phone[tenant.number].plan_kind is None
    assert by_phone[tenant.number].is_active is True


def test_me_numbers_last_active_is_iso_or_null(tenant: Tenant) -> None:
    raw = tenant.http().get("/me/numbers").json()
    for n in raw["numbers"]:
        if n["last_active"] is not None:
            dt.datetime.fromisoformat(n["last_active"].replace("Z", "+00:00"))
    assert raw["numbers"][0]["last_active"] is None


def test_number_restricted_to_another_key_is_not_in_pool(tenant: Tenant) -> None:
    other = tenant.add_key("second")
    restricted = make_number(tenant.server, tenant.org, key=other.prefix)
    mine = {n.phone_number for n in tenant.sdk().me.numbers.list().numbers or []}
    assert restricted["phone_number"] not in mine
    import blooio

    theirs = blooio.Blooio(base_url=tenant.server.base_url, api_key=other.api_key, max_retries=0)
    assert restricted["phone_number"] in {n.phone_number for n in theirs.me.numbers.list().numbers or []}


def test_tenants_see_only_their_own_numbers(tenant: Tenant, other_tenant: Tenant) -> None:
    mine = {n.phone_number for n in tenant.sdk().me.numbers.list().numbers or []}
    assert other_tenant.number not in mine
    assert tenant.sdk().me.retrieve().organization_id != other_tenant.organization_id
