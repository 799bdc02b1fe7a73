"""The dispatcher: claims conversations with due jobs and sends their messages in order.

One asyncio task claims batches of conversations (:func:`openbloo.delivery.claims.claim`) and runs one task
per conversation, up to ``dispatcher_concurrency`` at a time. Within a conversation, jobs go strictly one
after another in acceptance order. Every database step is a unit of work on the writer, so the steps of
many conversations share commits (on PostgreSQL the claims go through a writer of their own). The
dispatcher is the only caller of ``Transport.send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from openbloo.db.batch import Batch
from openbloo.db.writer import Writer
from openbloo.delivery import jobs
from openbloo.delivery.claims import ClaimedConversation, claim
from openbloo.delivery.state import apply_update, load_state, load_states
from openbloo.devices.health import HealthRecorder
from openbloo.devices.optouts import OPTED_OUT_ERRORS, record_opt_out
from openbloo.ids import new_id, now_ms
from openbloo.runtime import Runtime
from openbloo.transports.base import (
    DeviceHealth,
    EventSink,
    InboundMessage,
    PermanentError,
    Receipt,
    StatusUpdate,
    TransientError,
    Transport,
    TransportError,
)
from openbloo.transports.registry import TransportRegistry

log = logging.getLogger("openbloo.dispatcher")


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Delay before the next attempt after ``attempts`` failed ones: base, 2×base, 4×base … never above cap."""
    return float(min(cap, base * (2 ** max(0, attempts - 1))))


def apply_statuses(updates: list[StatusUpdate]) -> Any:
    def unit(batch: Batch) -> int:
        applied = 0
        if len(updates) > 1:
            load_states(batch, [u.message_id for u in updates if u.message_id])
        for u in updates:
            state = load_state(batch, message_id=u.message_id, provider_id=None if u.message_id else u.provider_id)
            if state is None:
                continue
            apply_update(batch, state, u)
            applied += 1
        return applied

    return unit


def _failed(job: jobs.Job, exc: PermanentError) -> Any:
    """The message failed for good; when the device said the recipient opted out (Twilio's 21610), that is
    recorded too, in the same transaction, so the next send to them is refused at once."""
    failed = jobs.record_failed(job, exc.code, str(exc), now_ms())
    recipients = job.outgoing.recipients
    if exc.code not in OPTED_OUT_ERRORS or job.outgoing.is_group or len(recipients) != 1:
        return failed

    def unit(batch: Batch) -> None:
        failed(batch)
        record_opt_out(job.number_id, recipients[0], now_ms())(batch)

    return unit


class DatabaseSink(EventSink):
    """Transport news → message state changes and events, through the writer."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.health = HealthRecorder(runtime.writer)

    async def device(self, health: DeviceHealth) -> None:
        await self.health.record(health)

    async def status(self, update: StatusUpdate) -> None:
        await self.statuses([update])

    async def statuses(self, updates: list[StatusUpdate]) -> None:
        if updates:
            await self.runtime.writer.run(apply_statuses(updates))

    async def inbound(self, message: InboundMessage) -> None:
        from openbloo.messages.inbound import record_inbound

        await self.runtime.writer.run(record_inbound(message))


class Dispatcher:
    def __init__(self, runtime: Runtime, registry: TransportRegistry | None = None) -> None:
        self.runtime = runtime
        s = runtime.settings
        self.registry = registry or TransportRegistry(runtime)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{new_id('', 6)}"
        self.lease_ms = int(s.delivery_lease_seconds * 1000)
        self.max_attempts = max(1, s.delivery_max_attempts)
        self.concurrency = max(1, s.dispatcher_concurrency)
        self._wake = asyncio.Event()
        self._wakes = 0  # wake-ups so far: a conversation's own re-claim looks at those during its run
        self._slot_free = asyncio.Event()
        self._active = 0
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[bool]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sink = DatabaseSink(runtime)
        # On PostgreSQL the claims commit through a writer (a connection) of their own. A claim is the step
        # between a message's acceptance and its hand-off to the device; on the shared writer it waited
        # behind the batches of outcomes, status reports and webhook attempt logs (each statement a round
        # trip there): accept → simulator p50 18 → 14 ms at 325 sends/s with a status webhook
        # (docs/benchmarks.md, seventh round). Claims touch only conversations leases and the first job's
        # in-flight marker; on a SQLite file a second writer would only queue for the same write lock.
        self.claims: Writer = runtime.writer
        if runtime.urls.dialect == "postgresql":
            self.claims = Writer(runtime.engine, name="openbloo-claims", inline=False)

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.claims is not self.runtime.writer:
            self.claims.start()
        await self.registry.start(self.sink)
        await self._resume_sent()
        self.runtime.job_listeners.append(self.wake_threadsafe)
        self._task = asyncio.create_task(self._run(), name="dispatcher")
        log.info("dispatcher %s started", self.worker_id)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.runtime.job_listeners.remove(self.wake_threadsafe)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.registry.close()
        if self.claims is not self.runtime.writer:
            self.claims.stop()

    def wake(self) -> None:
        """New jobs are waiting (called on the event loop: another process's commit)."""
        self._wakes += 1
        self._wake.set()

    def wake_threadsafe(self) -> None:
        """Called from the writer thread after a send commits: new jobs are waiting."""
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.wake)

    # -- the loop ------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        poll = self.runtime.settings.dispatcher_poll_seconds
        while True:
            try:
                free = self.concurrency - self._active
                if free <= 0:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                    continue
                self._wake.clear()
                wakes = self._wakes
                claimed = await self.claims.run(claim(self.worker_id, now_ms(), self.lease_ms, min(free, 256)))
                for conv in claimed:
                    self._active += 1
                    task = asyncio.create_task(self._process(conv))
                    self._tasks.add(task)
                    task.add_done_callback(functools.partial(self._done, wakes))
                if not claimed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), poll)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher loop error; retrying")
                await asyncio.sleep(poll)

    def _done(self, wakes: int, task: asyncio.Task[bool]) -> None:
        """A conversation's run ended; ``wakes``: the wake-up count when it was claimed."""
        self._tasks.discard(task)
        self._active -= 1
        self._slot_free.set()
        # Claim again now if the conversation may have more due jobs: some were left out of its claim, its run
        # ended early, or jobs were queued while it was held (the claims they woke passed it over). Otherwise
        # the next claim waits for news: after every conversation it found nothing most of the time, and on
        # PostgreSQL held the claims' connection while the next message's wake-up came (docs/benchmarks.md,
        # change 49).
        more = task.cancelled() or task.exception() is not None or task.result()
        if more or self._wakes != wakes:
            self._wake.set()

    async def _process(self, conv: ClaimedConversation) -> bool:
        """Send the conversation's claimed jobs in order; returns whether it may have more due jobs."""
        writer = self.runtime.writer
        held = released = False
        started = conv.head_started  # the next job's attempt is already marked (by the claim or the last outcome)
        try:
            i = 0
            while i < len(conv.jobs):
                job = conv.jobs[i]
                i += 1
                if not started:
                    if job.next_attempt_at > now_ms():
                        break  # the head waits for its retry; later jobs wait behind it
                    if not await writer.run(jobs.mark_attempt(job, self.worker_id, now_ms(), self.lease_ms)):
                        continue  # cancelled meanwhile (or the lease was lost: every later mark fails too)
                transport = self.registry.for_number(job.number_id, job.transport)
                following = conv.jobs[i] if i < len(conv.jobs) else None
                outcome = await self._attempt(job, transport, following)
                started = outcome == jobs.NEXT_STARTED
                if outcome == "held":
                    held = True
                    break
                if outcome == jobs.RELEASED:
                    released = True
                    break  # nothing was due after this job
                if outcome == jobs.NEXT_CANCELLED:
                    i += 1  # as after a failed mark: go on with the job after it
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("conversation %s: unexpected error", conv.id)
        finally:
            if not held and not released:
                with contextlib.suppress(Exception):
                    await writer.run(jobs.release([conv.id], self.worker_id))
        # Released after its last claimed job: nothing more is due unless the claim left jobs out. Held for a
        # retry: nothing is due before it (polling finds it). Otherwise (a mark failed, an error) look again.
        return conv.truncated if released else not held

    async def _attempt(self, job: jobs.Job, transport: Transport | None, following: jobs.Job | None) -> str:
        """Send ``job``; returns "held" (a retry parks the conversation) or what :func:`jobs.then_next` did."""
        writer = self.runtime.writer

        def finished(unit: Callable[[Batch], Any]) -> Callable[[Batch], str]:
            # The outcome's unit also starts the following job's attempt, or releases the conversation.
            return jobs.then_next(unit, job, following, self.worker_id, now_ms(), self.lease_ms)

        settings = self.runtime.settings
        receipt: Receipt | None = None
        handed_off = False  # whether this attempt may have reached the device
        try:
            if transport is None:
                raise TransientError(f"No device is available for {job.transport} number", code="device_unavailable")
            if job.in_flight and transport.can_find_sent:
                # The last attempt's outcome is unknown (the worker died mid-send): ask before re-sending.
                receipt = await transport.find_sent(job.outgoing)
                if receipt is not None:
                    await transport.resume(job.outgoing, receipt)
            if receipt is None:
                handed_off = True
                if transport.in_process:  # nothing to hang on; the timer was a tenth of the hand-off's cost
                    receipt = await transport.send(job.outgoing)
                else:
                    # asyncio.timeout, not wait_for: wait_for wraps every send in a task of its own.
                    async with asyncio.timeout(settings.delivery_send_timeout):
                        receipt = await transport.send(job.outgoing)
        except PermanentError as exc:
            return await writer.run(finished(_failed(job, exc)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code = exc.code if isinstance(exc, TransportError) else "transport_error"
            message = str(exc) or type(exc).__name__
            attempts = job.attempts + 1
            if attempts >= self.max_attempts:
                failed = jobs.record_failed(job, code, f"Gave up after {attempts} attempts: {message}", now_ms())
                return await writer.run(finished(failed))
            delay = backoff_seconds(attempts, settings.delivery_retry_base, settings.delivery_retry_max)
            if isinstance(exc, TransportError) and exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, settings.delivery_retry_max))
            now = now_ms()
            # The outcome stays unknown if the earlier attempt's was and nothing was sent now (no device, the
            # search failed), or if this attempt may have reached the device (a timeout): then the next
            # attempt searches the device first, instead of risking a second copy.
            unknown = (job.in_flight and not handed_off) or (
                handed_off and (isinstance(exc, TimeoutError) or getattr(exc, "maybe_sent", False))
            )
            await writer.run(
                jobs.record_retry(
                    job, message, now + int(delay * 1000), now, in_flight=self.worker_id if unknown else None
                )
            )
            return "held"
        return await writer.run(finished(jobs.record_sent(job, receipt, now_ms())))

    async def _resume_sent(self) -> None:
        """After a restart, re-arm receipts of messages left ``sent`` on transports that can tell."""
        kinds = self.registry.resumable_kinds()
        if not kinds:
            return
        pending = await self.runtime.writer.run(jobs.sent_messages_to_resume(kinds))
        for number_id, kind, outgoing, stored in pending:
            transport = self.registry.for_number(number_id, kind)
            if transport is None:
                continue
            # The stored receipt names the device's message; only without one is the device asked for it.
            receipt: Receipt | None = stored if stored.provider_id else None
            if receipt is None and transport.can_find_sent:
                try:
                    receipt = await transport.find_sent(outgoing)
                except TransportError as exc:
                    log.info("could not re-check %s after the restart: %s", outgoing.message_id, exc)
                    continue
            if receipt is not None:
                await transport.resume(outgoing, receipt)
        if pending:
            log.info("re-armed receipts of %d sent messages", len(pending))
