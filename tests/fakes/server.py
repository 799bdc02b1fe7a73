"""Run an ASGI app under uvicorn on 127.0.0.1 in a background thread (for fakes and test receivers)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn

T = TypeVar("T")


class _Server(uvicorn.Server):
    loop: asyncio.AbstractEventLoop | None = None

    def install_signal_handlers(self) -> None:  # the host process owns signals
        pass

    async def serve(self, sockets: Any = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)


class ThreadedServer:
    def __init__(self, app: Any, *, port: int = 0, host: str = "127.0.0.1") -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"fake-{port}", daemon=True)
        self.host = host
        self.port = port

    def start(self, timeout: float = 15.0) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._server.loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the server's event loop; a future for its result."""
        assert self._server.loop is not None, "server not running"
        return asyncio.run_coroutine_threadsafe(coro, self._server.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return self.submit(coro).result(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
