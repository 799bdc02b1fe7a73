"""The simulator: an in-process phone that behaves like a real device, for development, demos and tests.

Rules (documented in the README, because client developers test against them):

- Protocol per handle: e-mail addresses and phone numbers are on iMessage, except phone numbers whose
  last digit is 9, which are SMS-only. Effects and replies are honoured on iMessage only; on SMS the
  text goes out plain (not an error). A group is iMessage unless one of its members is SMS-only.
- Test handles, by the last four digits of a phone number: ``04xx`` fails permanently; ``05xN`` fails
  transiently N times (N = 1..9), then delivers; ``06xx`` is sent but never delivered.
- Schedule: ``sent`` on hand-off, ``delivered`` ``delivery_ms`` later, ``read`` ``read_ms`` after that
  (iMessage only). No jitter, so one chat's messages are reported in the order they reached the device.

The device keeps its own durable memory, a small SQLite file separate from openbloo's database, like a
phone's: every hand-off attempt (message id, job reference, attempt, outcome, time) is committed there
before ``send`` returns. That record answers "was this already sent?" after a crash (:meth:`find_sent`),
re-arms receipts after a restart (:meth:`resume`), and is what ``openbloo simulate log`` prints, so
anyone can check that nothing was sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    select,
)
from sqlalchemy.pool import NullPool

from openbloo.db.batch import Batch
from openbloo.db.direct import Prepared
from openbloo.db.engine import WRITER_AUTOCHECKPOINT_PAGES, sqlite_pragmas
from openbloo.db.writer import Writer, run_unit
from openbloo.ids import new_id, now_ms
from openbloo.transports.base import (
    Capability,
    DeviceCheck,
    EventSink,
    Outgoing,
    PermanentError,
    Receipt,
    StatusUpdate,
    TransientError,
    Transport,
)

log = logging.getLogger("openbloo.simulator")

device_metadata = MetaData()
handoffs = Table(
    "handoffs",
    device_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(40), nullable=False, index=True),
    Column("job_ref", String(64), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("sender", String(32), nullable=False),
    Column("recipients", String(2000), nullable=False),
    Column("outcome", String(20), nullable=False),  # sent | transient_failure | permanent_failure
    Column("protocol", String(10), nullable=True),
    Column("provider_id", String(64), nullable=True),
    Column("at", BigInteger, nullable=False),
)


_HANDOFF = Prepared.insert(
    handoffs,
    ("message_id", "job_ref", "attempt", "sender", "recipients", "outcome", "protocol", "provider_id", "at"),
)


def open_device_store(path: Path, *, keep_open: bool = False) -> Engine:
    """The device's store. ``keep_open``: the running device's writer keeps one connection for its life (a
    connection per batch, with its pragmas, cost every hand-off a file open); readers use and close one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pool: dict[str, Any] = {"pool_size": 1, "max_overflow": 0} if keep_open else {"poolclass": NullPool}
    engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False}, **pool)

    event.listen(engine, "connect", sqlite_pragmas("NORMAL", WRITER_AUTOCHECKPOINT_PAGES if keep_open else None))

    device_metadata.create_all(engine)
    return engine


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every hand-off the simulator recorded, oldest first."""
    if not path.exists():
        return []
    engine = open_device_store(path)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(handoffs).order_by(handoffs.c.seq)).mappings()]
    finally:
        engine.dispose()


def handle_protocol(handle: str) -> str:
    if "@" in handle:
        return "imessage"
    return "sms" if handle[-1:] == "9" else "imessage"


def test_rule(handle: str) -> tuple[str, int] | None:
    """The test behaviour a handle asks for: ("permanent", 0), ("transient", N), ("undelivered", 0) or None."""
    if "@" in handle:
        return None
    digits = handle[-4:]
    if not digits.isdigit():  # not the usual "+1555…": the last four of its digits, wherever they are
        digits = "".join(c for c in handle if c.isdigit())[-4:]
    if len(digits) < 4:
        return None
    if digits.startswith("04"):
        return ("permanent", 0)
    if digits.startswith("05") and digits[3] != "0":
        return ("transient", int(digits[3]))
    if digits.startswith("06"):
        return ("undelivered", 0)
    return None


class SimulatorTransport(Transport):
    kind = "simulator"
    capabilities = frozenset(
        {
            Capability.IMESSAGE,
            Capability.SMS,
            Capability.EFFECTS,
            Capability.REPLIES,
            Capability.REACTIONS,
            Capability.TYPING,
            Capability.READ_RECEIPTS,
            Capability.GROUP_CREATE,
            Capability.POLLS,
            Capability.ATTACHMENTS,
        }
    )
    can_find_sent = True
    in_process = True

    def __init__(self, state_path: Path, *, delivery_ms: int = 300, read_ms: int = 300) -> None:
        self.state_path = state_path
        self.delivery_ms = delivery_ms
        self.read_ms = read_ms
        self._engine: Engine | None = None
        self._writer: Writer | None = None
        self._sink: EventSink | None = None
        self._timers: list[tuple[int, int, StatusUpdate]] = []
        self._counter = itertools.count()
        self._wake = asyncio.Event()
        self._clock: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self, sink: EventSink) -> None:
        self._sink = sink
        self._engine = await asyncio.to_thread(lambda: open_device_store(self.state_path, keep_open=True))
        self._writer = Writer(self._engine, name="simulator-device")
        self._writer.start()
        self._wake = asyncio.Event()
        self._clock = asyncio.create_task(self._run_clock(), name="simulator-clock")

    async def close(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        if self._writer is not None:
            self._writer.stop()
        if self._engine is not None:
            self._engine.dispose()

    # -- sending -------------------------------------------------------------------------------------------
    async def send(self, message: Outgoing) -> Receipt:
        assert self._writer is not None, "simulator not started"
        rule = self._rule_for(message.recipients)
        protocol = "sms" if any(handle_protocol(h) == "sms" for h in message.recipients) else "imessage"
        now = now_ms()
        outcome, provider_id = "sent", f"sim-{new_id('', 16)}"
        provider_id_or_none: str | None = provider_id
        if rule is not None and rule[0] == "permanent":
            outcome, provider_id_or_none = "permanent_failure", None
        elif rule is not None and rule[0] == "transient":
            failures = await self._writer.run(self._count_failures(message.transport_ref))
            if failures < rule[1]:
                outcome, provider_id_or_none = "transient_failure", None
        await self._writer.run(self._record(message, outcome, protocol, provider_id_or_none, now))
        if outcome == "permanent_failure":
            raise PermanentError("Simulated permanent failure (test handle 04xx)", code="simulated_permanent_failure")
        if outcome == "transient_failure":
            raise TransientError("Simulated transient failure (test handle 05xN)", code="simulated_transient_failure")
        chat_guid = self._chat_guid(message)
        news = self._news(message, Receipt(provider_id, protocol, now), rule)
        # Reports already due at the hand-off (no delay configured) go back with the receipt, so the dispatcher
        # records them with the send in one transaction; only later ones wait on the clock.
        due = 0
        while due < len(news) and news[due].at <= now:
            due += 1
        for update in news[due:]:
            self._schedule(update.at, update)
        return Receipt(provider_id, protocol, now, chat_guid, tuple(news[:due]))

    async def find_sent(self, message: Outgoing) -> Receipt | None:
        assert self._writer is not None, "simulator not started"

        def unit(batch: Batch) -> Receipt | None:
            row = batch.conn.execute(
                select(handoffs.c.provider_id, handoffs.c.protocol, handoffs.c.at)
                .where(handoffs.c.job_ref == message.transport_ref, handoffs.c.outcome == "sent")
                .order_by(handoffs.c.seq)
                .limit(1)
            ).first()
            if row is None:
                return None
            return Receipt(row.provider_id, row.protocol, row.at, chat_guid=self._chat_guid(message))

        return await self._writer.run(unit)

    async def resume(self, message: Outgoing, receipt: Receipt) -> None:
        self._arm(message, receipt, self._rule_for(message.recipients))

    async def check(self) -> DeviceCheck:
        return DeviceCheck(True, True, ("The simulator is built in: always reachable, every feature available.",))

    # -- internals -----------------------------------------------------------------------------------------
    @staticmethod
    def _rule_for(recipients: tuple[str, ...]) -> tuple[str, int] | None:
        for handle in recipients:
            rule = test_rule(handle)
            if rule is not None:
                return rule
        return None

    @staticmethod
    def _chat_guid(message: Outgoing) -> str | None:
        if not message.is_group:
            return None
        digest = hashlib.sha256(f"{message.sender}|{message.chat_key}".encode()).hexdigest()[:12]
        return message.chat_guid or f"iMessage;+;chat{int(digest, 16) % 10**12:012d}"

    def _count_failures(self, job_ref: str) -> Any:
        def unit(batch: Batch) -> int:
            rows = batch.conn.execute(
                select(handoffs.c.seq).where(handoffs.c.job_ref == job_ref, handoffs.c.outcome == "transient_failure")
            )
            return len(rows.all())

        return unit

    @staticmethod
    def _record(message: Outgoing, outcome: str, protocol: str, provider_id: str | None, at: int) -> Any:
        recipients = ",".join(message.recipients)
        row: tuple[Any, ...] = (message.message_id, message.transport_ref, message.attempt, message.sender)
        row += (recipients, outcome, protocol, provider_id, at)

        def unit(batch: Batch) -> None:
            batch.add(_HANDOFF, row)

        return unit

    def _arm(self, message: Outgoing, receipt: Receipt, rule: tuple[str, int] | None) -> None:
        for update in self._news(message, receipt, rule):
            self._schedule(update.at, update)

    def _news(self, message: Outgoing, receipt: Receipt, rule: tuple[str, int] | None) -> list[StatusUpdate]:
        """What the phone will report about a message it sent, in order: delivered, then read (iMessage)."""
        if rule is not None and rule[0] == "undelivered":
            return []
        # Receipts carry the protocol: one may overtake the dispatcher's own record of the send, and the
        # state machine then fills in "sent" from the receipt alone.
        ids = {"message_id": message.message_id, "provider_id": receipt.provider_id, "protocol": receipt.protocol}
        delivered_at = receipt.sent_at + self.delivery_ms
        news = [StatusUpdate("delivered", delivered_at, **ids)]
        if receipt.protocol == "imessage":
            read_at = delivered_at + self.read_ms
            news.append(StatusUpdate("read", read_at, **ids))
        return news

    def _schedule(self, due_ms: int, update: StatusUpdate) -> None:
        heapq.heappush(self._timers, (due_ms, next(self._counter), update))
        self._wake.set()

    async def _run_clock(self) -> None:
        while True:
            if not self._timers:
                self._wake.clear()
                await self._wake.wait()
                continue
            due = self._timers[0][0] - now_ms()
            if due > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due / 1000)
                continue
            now = now_ms()
            ready: list[StatusUpdate] = []
            while self._timers and self._timers[0][0] <= now:
                ready.append(heapq.heappop(self._timers)[2])
            if self._sink is not None:
                try:
                    await self._sink.statuses(ready)
                except Exception:
                    # A phone keeps a receipt until it gets through; try again shortly, in the same order.
                    log.exception("simulator could not report %d status updates; retrying", len(ready))
                    retry_at = now_ms() + 1000
                    for update in ready:
                        self._schedule(retry_at, update)
                    await asyncio.sleep(1)


def log_entries(engine: Engine) -> list[dict[str, Any]]:
    def unit(batch: Batch) -> list[dict[str, Any]]:
        return [dict(r) for r in batch.conn.execute(select(handoffs).order_by(handoffs.c.seq)).mappings()]

    return run_unit(engine, unit)
