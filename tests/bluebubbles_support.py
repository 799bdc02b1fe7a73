"""BlueBubbles test support: a tenant whose number is served by a fake BlueBubbles Server.

``bluebubbles`` (a fixture factory, see ``conftest``-style use in the test modules) starts a fake, adds a
``bluebubbles`` number pointing at it to a fresh organization, and waits until the running server has built
the transport and registered its webhook. At teardown the number is detached from the fake (the registry
closes its transport) and the fake stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from openbloo.db import models as m
from openbloo.db.writer import run_unit
from tests.conftest import Server, Tenant, make_tenant
from tests.fakes.bluebubbles import FakeBlueBubbles
from tests.helpers import path_id, wait_for


@dataclass
class Device:
    fake: FakeBlueBubbles
    tenant: Tenant

    @property
    def server(self) -> Server:
        return self.tenant.server

    def number_row(self) -> Any:
        with self.server.runtime.engine.connect() as conn:
            return conn.execute(select(m.numbers).where(m.numbers.c.id == self.tenant.allocation_id)).one()

    def callback_url(self) -> str:
        return f"{self.server.root_url}/callbacks/bluebubbles/{self.number_row().inbound_token}"

    def messages(self, chat_id: str) -> list[dict[str, Any]]:
        with self.tenant.http() as http:
            r = http.get(f"/chats/{path_id(chat_id)}/messages", params={"limit": 100})
        if r.status_code == 404:
            return []  # no such chat yet
        assert r.status_code == 200, r.text
        return list(r.json()["messages"])

    def detach(self) -> None:
        def unit(batch: Any) -> None:
            batch.conn.execute(
                update(m.numbers).where(m.numbers.c.id == self.tenant.allocation_id).values(transport_config={})
            )

        run_unit(self.server.runtime.engine, unit)


def start_device(server: Server, **fake_options: Any) -> Device:
    fake = FakeBlueBubbles(**fake_options).start()
    tenant = make_tenant(
        server,
        transport="bluebubbles",
        transport_config={"bluebubbles": {"url": fake.url, "password": fake.password}},
    )
    device = Device(fake, tenant)
    wait_for(lambda: fake.webhooks, timeout=10, what="the webhook registration")
    return device


def wait_device_info(device: Device, **expected: Any) -> None:
    """Until the device's stored health shows ``expected`` (and the key cache has seen it)."""

    def check() -> bool:
        row = device.number_row()
        info = row.device_info or {}
        return all((row.device_status if k == "status" else info.get(k)) == v for k, v in expected.items())

    wait_for(check, timeout=10, what=f"device info {expected}")
    # The key → number-pool cache of the running server (auth_cache_seconds) must expire once.
    import time

    time.sleep(server_auth_cache(device.server))


def server_auth_cache(server: Server) -> float:
    return float(server.runtime.settings.auth_cache_seconds) + 0.1
