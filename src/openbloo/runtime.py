"""The process's shared parts: settings, engines, the writer and the key cache, built once and passed down."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from openbloo.auth.context import KeyResolver
from openbloo.chats.page_marks import PageMarks
from openbloo.config import DatabaseUrls, Settings, database_urls, get_settings
from openbloo.db.engine import make_async_engine, make_sync_engine
from openbloo.db.migrate import upgrade
from openbloo.db.writer import Writer

log = logging.getLogger("openbloo")


@dataclass
class Runtime:
    settings: Settings
    urls: DatabaseUrls
    engine: Engine
    aengine: AsyncEngine
    writer: Writer
    auth: KeyResolver
    # Whether this process runs the background workers (dispatcher, webhook sender) beside the API.
    run_workers: bool = True
    extras: dict[str, Any] = field(default_factory=dict)
    # Called in the writer thread after a batch that queued delivery jobs commits (the dispatcher's wake-up).
    job_listeners: list[Any] = field(default_factory=list)
    # Async clean-ups for parts made on demand (HTTP clients of the API process), run by :meth:`close`.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Where deep pages of long chats start (GET /chats/{id}/messages), found by this process's reads.
    page_marks: PageMarks = field(default_factory=PageMarks)

    def notify_jobs(self) -> None:
        for listener in self.job_listeners:
            listener()

    @classmethod
    def create(cls, settings: Settings | None = None, *, migrate: bool = True) -> Runtime:
        settings = settings or get_settings()
        urls = database_urls(settings.database_url)
        if migrate:
            upgrade(urls)
        engine = make_sync_engine(urls, synchronous=settings.sqlite_synchronous)
        aengine = make_async_engine(urls, synchronous=settings.sqlite_synchronous)
        return cls(
            settings=settings,
            urls=urls,
            engine=engine,
            aengine=aengine,
            writer=Writer(engine),
            auth=KeyResolver(aengine, settings.auth_cache_seconds),
        )

    def start(self) -> None:
        if self.run_workers:
            # The dispatcher and the webhook sender share this event loop: batches run on it would take the
            # loop's time from their I/O (measured: status webhooks fell behind the sends, 369 against 1,138
            # delivered per second with the batches on the writer thread). Here the writer thread runs them.
            self.writer.inline = False
        self.writer.start()

    async def close(self) -> None:
        for closer in self.closers:
            try:
                await closer()
            except Exception:
                log.exception("clean-up failed")
        self.closers.clear()
        self.writer.stop()
        await self.aengine.dispose()
        self.engine.dispose()
