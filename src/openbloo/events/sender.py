"""The webhook sender: POSTs due deliveries to their receivers, signed, and retries on the schedule.

Runs in every process that runs the workers (``serve``, ``worker``). It claims due deliveries in batches
(:mod:`openbloo.events.deliveries`), sends them concurrently, at most ``webhook_concurrency_per_endpoint``
at a time per webhook and ``webhook_concurrency`` in all, so one slow or dead receiver holds only its own
slots and never delays another receiver's events. A 2xx ends the delivery; anything else (another
status, a timeout, a refused connection, an address the URL policy refuses) is a failed attempt, retried
after the next step of the schedule (DECISIONS.md §14) with ±10 % jitter, and marked ``failed`` once the
schedule is spent. Every attempt is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from openbloo import __version__
from openbloo.events import fanout
from openbloo.events.deliveries import AttemptRecord, ClaimedDelivery, claim, record_attempts, unclaim
from openbloo.events.http1 import Http1Client, HttpError
from openbloo.events.signing import signature_header
from openbloo.ids import new_id, now_ms
from openbloo.runtime import Runtime
from openbloo.webhooks.urls import Resolver, UrlRefused

log = logging.getLogger("openbloo.webhooks")

DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
JITTER = 0.10
MAX_READ_BYTES = 64 * 1024
USER_AGENT = f"openbloo-webhooks/{__version__}"
# Deliveries claimed ahead of the concurrency bounds (this many times them), so a slot that frees up starts
# its next delivery at once instead of after a claim's round trip through the writer.
PREFETCH = 4
# How long a stopping sender lets the attempts in flight finish before it cancels them.
STOP_GRACE_SECONDS = 5.0
# The default linger of the attempts' log on PostgreSQL (``webhook_log_linger_seconds``).
POSTGRES_LOG_LINGER_SECONDS = 0.02
# Attempts logged by one unit at most, however long the linger: a log that waits for more stops waiting here.
LOG_BATCH = 256

_encode = msgspec.json.Encoder().encode


def parse_retry_schedule(raw: str | None) -> tuple[float, ...]:
    """``"0.5,1,1,1"`` → (0.5, 1.0, 1.0, 1.0); None or empty → the documented default."""
    if raw is None or not raw.strip():
        return DEFAULT_RETRY_SCHEDULE
    try:
        steps = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"OPENBLOO_WEBHOOK_RETRY_SCHEDULE must be comma-separated seconds, got {raw!r}") from None
    if any(s < 0 for s in steps):
        raise ValueError("OPENBLOO_WEBHOOK_RETRY_SCHEDULE steps must not be negative")
    return steps


def next_attempt_delay(schedule: tuple[float, ...], failed_attempts: int) -> float | None:
    """Seconds until the retry after ``failed_attempts`` failures, or None once the schedule is spent."""
    if failed_attempts > len(schedule):
        return None
    base = schedule[failed_attempts - 1]
    return max(0.0, base * (1 + random.uniform(-JITTER, JITTER)))


def event_body(payload: Any) -> bytes:
    """The exact bytes a receiver gets (and signs over): the stored payload, encoded once."""
    return _encode(payload)


@dataclass(frozen=True, slots=True)
class HttpOutcome:
    status: int | None
    body: str | None
    headers: dict[str, str]
    size: int
    content_type: str | None
    duration_ms: int
    attempted_at: int
    received_at: int | None
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def post_event(
    client: httpx.AsyncClient | Http1Client,
    resolver: Resolver,
    *,
    url: str,
    secret: str,
    body: bytes,
    event_type: str,
    message_id: str | None,
    event_id: str,
    timeout: float,
    original_event_id: str | None = None,
) -> HttpOutcome:
    """One signed POST to a receiver, to the address the URL policy checked (never raises)."""
    attempted_at = now_ms()
    started = time.perf_counter()

    def took() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        target = await resolver.target(url)
    except UrlRefused as exc:
        return HttpOutcome(None, None, {}, 0, None, took(), attempted_at, None, str(exc), "url_refused")
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Blooio-Event": event_type,
        "X-Blooio-Event-Id": event_id,
        "X-Blooio-Signature": signature_header(secret, body),
    }
    if message_id:
        headers["X-Blooio-Message-Id"] = message_id
    if original_event_id is not None:
        headers["X-Blooio-Replay"] = "true"
        headers["X-Original-Event-Id"] = original_event_id
    if isinstance(client, Http1Client):
        return await _post_http1(client, target.url, headers, body, target.sni_hostname, timeout, attempted_at, took)
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    try:
        async with asyncio.timeout(timeout):
            request = client.build_request("POST", target.url, content=body, headers=headers, extensions=extensions)
            response = await client.send(request, stream=True)
            try:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size <= MAX_READ_BYTES:
                        chunks.append(chunk)
                    else:
                        break
            finally:
                await response.aclose()
    except TimeoutError:
        return HttpOutcome(
            None, None, {}, 0, None, took(), attempted_at, None, f"timed out after {timeout:g}s", "timeout"
        )
    except httpx.HTTPError as exc:
        kind = "connection_error" if isinstance(exc, httpx.TransportError) else "http_error"
        return HttpOutcome(None, None, {}, 0, None, took(), attempted_at, None, str(exc) or type(exc).__name__, kind)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    return HttpOutcome(
        status=response.status_code,
        body=text,
        headers=dict(response.headers),
        size=size,
        content_type=response.headers.get("content-type"),
        duration_ms=took(),
        attempted_at=attempted_at,
        received_at=now_ms(),
    )


async def _post_http1(
    client: Http1Client,
    url: str,
    headers: dict[str, str],
    body: bytes,
    sni_hostname: str | None,
    timeout: float,
    attempted_at: int,
    took: Any,
) -> HttpOutcome:
    try:
        async with asyncio.timeout(timeout):
            resp = await client.post(url, headers, body, sni_hostname=sni_hostname, read_limit=MAX_READ_BYTES)
    except TimeoutError:
        return HttpOutcome(
            None, None, {}, 0, None, took(), attempted_at, None, f"timed out after {timeout:g}s", "timeout"
        )
    except HttpError as exc:
        return HttpOutcome(None, None, {}, 0, None, took(), attempted_at, None, str(exc), "connection_error")
    return HttpOutcome(
        status=resp.status,
        body=resp.body.decode("utf-8", errors="replace"),
        headers=resp.headers,
        size=resp.size,
        content_type=resp.headers.get("content-type"),
        duration_ms=took(),
        attempted_at=attempted_at,
        received_at=now_ms(),
    )


def new_client(concurrency: int) -> httpx.AsyncClient:
    # No redirects: a 3xx is an answer (a failed attempt), and following one would bypass the URL policy.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=min(concurrency, 64))
    return httpx.AsyncClient(follow_redirects=False, limits=limits, timeout=None, trust_env=False)


class WebhookSender:
    def __init__(self, runtime: Runtime) -> None:
        s = runtime.settings
        self.runtime = runtime
        self.schedule = parse_retry_schedule(s.webhook_retry_schedule)
        self.timeout = s.webhook_timeout_seconds
        self.per_webhook = max(1, s.webhook_concurrency_per_endpoint)
        self.ahead = self.per_webhook * PREFETCH  # deliveries one webhook may have claimed, in flight or waiting
        self.concurrency = max(1, s.webhook_concurrency)
        self.poll = s.webhook_poll_seconds
        linger = s.webhook_log_linger_seconds
        if linger is None:
            linger = POSTGRES_LOG_LINGER_SECONDS if runtime.urls.dialect == "postgresql" else 0.0
        self.log_linger = max(0.0, linger)
        # One attempt takes at most the timeout; the margin covers recording it. A sender that dies holds its
        # deliveries this long, then another (or its restart) claims them again.
        self.lease_ms = int((self.timeout + 10) * 1000)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id('', 6)}"
        self.resolver = Resolver(s.webhook_allow_private)
        # The sender's own lean client (events/http1.py); replays from the API keep using httpx.
        self.client: Http1Client | None = None
        self._inflight: dict[str, int] = {}
        self._active = 0
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Finished attempts waiting to be logged; one writer unit logs every attempt that waits (see _log).
        self._unlogged: list[tuple[AttemptRecord, asyncio.Future[None]]] = []
        self._logger: asyncio.Task[None] | None = None
        self._log_now = asyncio.Event()  # ends the linger: enough attempts wait, or the sender stops
        self._stopping = False
        # Claimed, not started yet: webhook id → (claimed at, delivery), oldest first.
        self._queued: dict[str, deque[tuple[int, ClaimedDelivery]]] = {}
        self._queued_total = 0
        # Deliveries pushed by the writer thread at their commit, for the event loop to take (adopt_threadsafe).
        self._pushed: deque[ClaimedDelivery] = deque()
        self._pushed_waiting = False
        # Whether the last claim came back full (or had no room): more deliveries may be due than were taken.
        self._backlog = True

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.client = Http1Client()
        fanout.add_listener(self.wake_threadsafe)
        fanout.set_local_sender(self)
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self) -> None:
        fanout.set_local_sender(None)
        fanout.remove_listener(self.wake_threadsafe)
        self._take_pushed(start=False)  # committed and leased to this sender: given back below with the rest
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        held = [d.id for queue in self._queued.values() for _, d in queue]
        self._queued.clear()
        self._queued_total = 0
        if held:  # give the leases of claimed-but-unsent deliveries back, for the next sender to take at once
            with contextlib.suppress(Exception):
                await self.runtime.writer.run(unclaim(held, self.worker_id))
        # Attempts that were made are logged before the sender goes, without their linger: their receivers
        # have the events, and a delivery left unlogged would be sent again once its lease ran out. Attempts
        # in flight may finish first; cancelled, their events would be sent again too.
        self._stopping = True
        self._log_now.set()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=min(self.timeout, STOP_GRACE_SECONDS))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._logger is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._logger, timeout=10)
        if self.client is not None:
            await self.client.aclose()

    def wake(self) -> None:
        """New deliveries are waiting (called on the event loop: another process's commit)."""
        self._wake.set()

    # -- deliveries pushed at their commit (events.fanout) -------------------------------------------------
    def has_room(self, webhook_id: str) -> bool:
        """Called in the writer thread: whether the webhook's claimed-ahead window has room for one more. Read
        without a lock: a batch may overshoot the window by its own deliveries, no more."""
        held = self._inflight.get(webhook_id, 0) + len(self._queued.get(webhook_id, ()))
        return held + len(self._pushed) < self.ahead and self._active + self._queued_total < self.concurrency * PREFETCH

    def adopt_threadsafe(self, delivery: ClaimedDelivery) -> None:
        """Called in the writer thread once ``delivery`` (leased to this sender) is committed."""
        self._pushed.append(delivery)
        if not self._pushed_waiting and self._loop is not None and not self._loop.is_closed():
            self._pushed_waiting = True
            with contextlib.suppress(RuntimeError):  # the loop is closing: the lease lapses, it is claimed again
                self._loop.call_soon_threadsafe(self._take_pushed)

    def _take_pushed(self, start: bool = True) -> None:
        self._pushed_waiting = False  # before taking: a push from now on schedules another take
        at = now_ms()
        webhooks: dict[str, None] = {}
        while self._pushed:
            delivery = self._pushed.popleft()
            self._queued.setdefault(delivery.webhook_id, deque()).append((at, delivery))
            self._queued_total += 1
            webhooks[delivery.webhook_id] = None
        for webhook_id in webhooks if start else ():
            self._start_ready(webhook_id)

    def wake_threadsafe(self) -> None:
        """Called from the writer thread after a batch with new deliveries commits."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while True:
            try:
                self._wake.clear()
                room = self.concurrency * PREFETCH - self._active - self._queued_total
                claimed: list[ClaimedDelivery] = []
                ahead = self.ahead
                busy = set(self._inflight) | set(self._queued)
                slots = {w: ahead - self._inflight.get(w, 0) - len(self._queued.get(w, ())) for w in busy}
                # What the busy webhooks can still take, plus one idle webhook's worth: the claim scans a
                # few times this many due rows, so a backlog of one receiver costs a claim what it can take,
                # not the whole window. A full claim is followed by another at once (below).
                limit = min(room, 256, sum(max(0, n) for n in slots.values()) + ahead)
                if room > 0:
                    claimed = await self.runtime.writer.run(
                        claim(self.worker_id, now_ms(), self.lease_ms, limit, slots, ahead)
                    )
                at = now_ms()
                for delivery in claimed:
                    self._queued.setdefault(delivery.webhook_id, deque()).append((at, delivery))
                    self._queued_total += 1
                for webhook_id in dict.fromkeys(d.webhook_id for d in claimed):
                    self._start_ready(webhook_id)
                # Claim again at once only if the claim came back full (more may be due); otherwise everything
                # due was taken, and the next claim waits for news (a commit with new deliveries, a freed slot)
                # or the poll: claiming in a loop while deliveries trickle in would spin on the writer.
                self._backlog = room <= 0 or len(claimed) >= limit
                if len(claimed) < limit or room <= 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.poll)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook sender loop error; retrying")
                await asyncio.sleep(self.poll)

    def _start_ready(self, webhook_id: str) -> None:
        """Start the webhook's claimed deliveries, oldest first, while it and the sender have free slots."""
        queue = self._queued.get(webhook_id)
        while queue and self._inflight.get(webhook_id, 0) < self.per_webhook and self._active < self.concurrency:
            claimed_at, delivery = queue.popleft()
            self._queued_total -= 1
            if now_ms() - claimed_at > self.lease_ms // 2:
                continue  # held here too long: its lease could lapse mid-send; it is claimed again later
            self._inflight[webhook_id] = self._inflight.get(webhook_id, 0) + 1
            self._active += 1
            task = asyncio.create_task(self._deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._done)
        if queue is not None and not queue:
            del self._queued[webhook_id]

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)

    def _release(self, d: ClaimedDelivery) -> None:
        """Give back the delivery's concurrency slots (its own webhook's and the global one)."""
        self._active -= 1
        left = self._inflight.get(d.webhook_id, 1) - 1
        if left <= 0:
            self._inflight.pop(d.webhook_id, None)
        else:
            self._inflight[d.webhook_id] = left
        self._start_ready(d.webhook_id)
        if self._active < self.concurrency:
            for webhook_id in list(self._queued):
                self._start_ready(webhook_id)
        # Refill in halves: claiming for every freed slot made one claim (a writer unit scanning the due
        # rows) per delivery; a webhook whose claimed-ahead window is still more than half full has work. Only
        # when the last claim came back full is more known to be due: otherwise news (a commit with deliveries
        # nobody holds) or the poll wakes the claim.
        waiting = self._inflight.get(d.webhook_id, 0) + len(self._queued.get(d.webhook_id, ()))
        if waiting <= self.ahead // 2 and self._backlog:
            self._wake.set()

    async def _log(self, record: AttemptRecord) -> None:
        """Log one finished attempt, together with the others finished meanwhile or within the linger
        (``webhook_log_linger_seconds``), in one unit of work.

        Returns once the attempt's record is committed. Until then its delivery keeps its lease, so it
        cannot be claimed again; a crash before the commit leaves it to be re-sent (at-least-once).
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unlogged.append((record, fut))
        if len(self._unlogged) >= LOG_BATCH:
            self._log_now.set()
        if self._logger is None or self._logger.done():
            self._logger = asyncio.create_task(self._log_waiting(), name="webhook-attempt-log")
        await fut

    async def _log_waiting(self) -> None:
        while self._unlogged:
            if self.log_linger and len(self._unlogged) < LOG_BATCH:  # let the attempts finishing now join
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.log_linger):  # not wait_for: a task of its own each time
                        await self._log_now.wait()
            if not self._stopping:  # the next log lingers again
                self._log_now.clear()
            waiting, self._unlogged = self._unlogged[:LOG_BATCH], self._unlogged[LOG_BATCH:]
            try:
                await self.runtime.writer.run(record_attempts([r for r, _ in waiting]))
            except Exception as exc:
                for _, fut in waiting:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in waiting:
                    if not fut.done():
                        fut.set_result(None)

    async def _deliver(self, d: ClaimedDelivery) -> None:
        released = False
        try:
            assert self.client is not None
            body = event_body(d.payload)
            outcome = await post_event(
                self.client,
                self.resolver,
                url=d.url,
                secret=d.secret,
                body=body,
                event_type=d.event_type,
                message_id=d.message_id,
                event_id=d.event_id,
                timeout=self.timeout,
            )
            # The receiver is done with this attempt: its slot serves the next delivery while this one is
            # logged (the delivery stays leased until the log commits).
            self._release(d)
            released = True
            attempts = d.attempts + 1
            next_at: int | None = None
            if outcome.ok:
                state = "succeeded"
            else:
                delay = next_attempt_delay(self.schedule, attempts)
                if delay is None:
                    state = "failed"
                else:
                    state, next_at = "pending", now_ms() + int(delay * 1000)
                log.info(
                    "webhook %s: %s attempt %d failed (%s)",
                    d.webhook_id,
                    d.event_type,
                    attempts,
                    outcome.status if outcome.status is not None else outcome.error,
                )
            record = AttemptRecord(
                delivery_id=d.id,
                webhook_id=d.webhook_id,
                event_id=d.event_id,
                url=d.url,
                body=body.decode(),
                attempted_at=outcome.attempted_at,
                received_at=outcome.received_at,
                status=outcome.status,
                response_body=outcome.body,
                duration_ms=outcome.duration_ms,
                error=outcome.error,
                state=state,
                attempts=attempts,
                next_attempt_at=next_at,
            )
            await self._log(record)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease expires and the delivery is claimed again: at-least-once, never dropped.
            log.exception("webhook delivery %s could not be completed", d.id)
        finally:
            if not released:
                self._release(d)
