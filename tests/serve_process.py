"""Run ``openbloo serve`` as a real subprocess (for restart and kill -9 tests); always stopped by PID."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

OPENBLOO = str(Path(sys.executable).with_name("openbloo"))


class ServeProcess:
    def __init__(self, database_url: str, workdir: Path, env: dict[str, str] | None = None, *args: str) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.env = {**os.environ, **(env or {})}
        self.args = args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = b""
        self.api_key: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/api"

    def start(self, timeout: float = 30) -> ServeProcess:
        cmd = [OPENBLOO, "serve", "--port", str(self.port), "--database-url", self.database_url, *self.args]
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{self.output.decode(errors='replace')}")
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 65536)
                self.output += chunk
            match = re.search(rb"API key:\s+(bl_live_\S+)", self.output)
            if match and self.api_key is None:
                self.api_key = match.group(1).decode()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
        self.stop()
        raise RuntimeError(f"serve did not come up:\n{self.output.decode(errors='replace')}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
