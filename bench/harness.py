"""Process plumbing for the benchmark: start, watch and stop what a scenario runs, and drive wrk.

Every process the harness starts is a direct child, remembered by PID and stopped by that PID only
(SIGTERM, then SIGKILL after a grace period). All traffic goes to 127.0.0.1. Every load run is bounded
in time (wrk's ``-d``, and a hard timeout around it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.memory import status_kb

BENCH_DIR = Path(__file__).resolve().parent
SEND_LUA = BENCH_DIR / "send.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIM_NUMBER = "+15555550100"


def resident_kb(by_process: dict[str, tuple[int, int]]) -> int:
    """The resident set of processes measured by ``memory_by_process``: anonymous plus file-backed."""
    return sum(anon + file for anon, file in by_process.values())


def stat_cpu(pid: int | str) -> tuple[str, int]:
    """The command name and the user + system CPU ticks so far of ``/proc/PID/stat``; raises OSError when the
    process is gone."""
    name, _, rest = Path(f"/proc/{pid}/stat").read_text().partition(" (")[2].rpartition(") ")
    fields = rest.split()  # from the state on: utime and stime are the 12th and 13th
    return name, int(fields[11]) + int(fields[12])


def local_postgres_cpu_seconds() -> float:
    """user + system CPU time so far of the local PostgreSQL server's processes (its backends, WAL writer,
    checkpointer ...): what openbloo's statements cost the database, which is spent outside openbloo's
    processes. The harness's PostgreSQL runs use the server on this machine, and nothing else uses it then.
    Only live processes count: a backend whose connection closed within the measured window takes its time
    with it (the deployments keep theirs open for the run)."""
    total = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            name, ticks = stat_cpu(proc.name)
        except OSError:
            continue
        if name == "postgres":
            total += ticks
    return total / CLK_TCK


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openbloo_bin() -> str:
    """The ``openbloo`` command of the Python running the harness (the project's venv)."""
    candidate = Path(sys.executable).with_name("openbloo")
    return str(candidate) if candidate.exists() else "openbloo"


class Proc:
    """A child process started by the harness; stopped by its PID, never by name."""

    _live: dict[int, Proc] = {}  # noqa: RUF012 - process registry, emptied by stop_all

    def __init__(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path, log_dir: Path):
        self.name = name
        self.cmd = cmd
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.pid = self.popen.pid
        Proc._live[self.pid] = self

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        """This process and its live descendants (``serve`` runs its workers in a child process)."""
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
        return pids

    def cpu_seconds(self) -> float:
        """user + system CPU time of the process and its live descendants (all their threads) so far."""
        total = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                total += stat_cpu(pid)[1]
        return total / CLK_TCK

    def rss_kb(self) -> int:
        """Resident memory of the process and its live descendants."""
        return resident_kb(self.memory_by_process())

    def memory_by_process(self) -> dict[str, tuple[int, int]]:
        """Anonymous and file-backed resident kB (``RssAnon``, ``RssFile`` + ``RssShmem``) of each process
        of the tree, by role: ``api`` for this process, ``worker`` for the worker process ``serve`` starts."""
        parts: dict[str, tuple[int, int]] = {}
        for pid in self.tree():
            try:
                kb = status_kb(pid)
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            role = "api" if pid == self.pid else ("worker" if b"worker" in argv else "child")
            if role in parts:
                role = f"{role} {pid}"
            parts[role] = (kb.get("RssAnon", 0), kb.get("RssFile", 0) + kb.get("RssShmem", 0))
        return parts

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(10)
        self._forget()

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._forget()

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _forget(self) -> None:
        Proc._live.pop(self.pid, None)
        with contextlib.suppress(Exception):
            self._log.close()

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(cls._live.values()):
            proc.stop(grace=5)


def wait_http(url: str, timeout: float = 60.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def run_wrk(
    url: str,
    *,
    conns: int,
    secs: float,
    env: dict[str, str],
    threads: int = 1,
    script: Path = SEND_LUA,
    out: Path | None = None,
) -> dict[str, Any]:
    """One bounded wrk run with a JSON-reporting Lua script; returns its JSON line as a dict."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian package 'wrk'; see bench/README.md)")
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{secs:g}s", "--timeout", "10s", "-s", str(script), url]
    done = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=secs + 60, check=False
    )
    if out is not None:
        out.write_text(done.stdout + "\n--- stderr\n" + done.stderr)
    for line in done.stdout.splitlines():
        if line.startswith("JSON:"):
            result: dict[str, Any] = json.loads(line[5:])
            merged: dict[str, int] = {}
            for part in result.pop("non2xx_by_status", []) or []:
                for status, n in part.items():
                    merged[status] = merged.get(status, 0) + int(n)
            result["non2xx_by_status"] = merged
            result["socket_errors"] = sum(result.get(k, 0) for k in ("err_connect", "err_read", "err_write"))
            return result
    raise RuntimeError(f"wrk printed no result:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


# -- openbloo deployments -------------------------------------------------------------------------------------


@dataclass
class Deployment:
    """openbloo running for one scenario: one ``serve`` on SQLite, or N API processes + M workers on PostgreSQL.

    ``layout`` is ``"serve"`` (one ``openbloo serve``: the API, and the workers in the process it starts),
    ``"serve-single"`` (``serve --single-process``: API and workers in one process), ``"serve-api"``
    (``serve --no-workers``) or ``"split"`` (``api_processes`` × bench.api_process on one port + ``workers`` ×
    ``openbloo worker``).
    """

    database_url: str
    workdir: Path
    layout: str = "serve"
    api_processes: int = 2
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)
    # Another openbloo source tree to run instead of the installed one (``--baseline-src``: before/after).
    src: Path | None = None
    port: int = 0
    api_key: str = ""
    procs: list[Proc] = field(default_factory=list)
    sim_state: Path = Path()

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.sim_state = self.workdir / "simulator.db"
        self.env = {
            "OPENBLOO_SIMULATOR_DELIVERY_MS": "0",
            "OPENBLOO_SIMULATOR_READ_MS": "0",
            "OPENBLOO_SIMULATOR_STATE": str(self.sim_state),
            "OPENBLOO_LOG_LEVEL": "warning",
            "OPENBLOO_WEBHOOK_ALLOW_PRIVATE": "true",
            **self.env,
        }
        if self.src is not None:
            self.env["PYTHONPATH"] = os.pathsep.join([str(self.src / "src"), str(BENCH_DIR.parent)])

    def openbloo(self) -> list[str]:
        """How to run the ``openbloo`` command of this deployment's source tree."""
        if self.src is not None:
            return [sys.executable, "-m", "openbloo.cli"]
        return [openbloo_bin()]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*self.openbloo(), *args, "--database-url", self.database_url],
            cwd=self.workdir,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"openbloo {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def provision(self) -> str:
        """Schema, organization 'default', the simulator number and a key (what ``serve`` bootstraps)."""
        self.cli("migrate")
        if not self.api_key:
            self.api_key = json.loads(self.cli("keys", "create", "--org", "default", "--name", "bench", "--json"))[
                "api_key"
            ]
            with contextlib.suppress(RuntimeError):  # already there on a reused database
                self.cli("numbers", "add", SIM_NUMBER, "--org", "default")
        return self.api_key

    def start(self, timeout: float = 90.0) -> Deployment:
        if not self.api_key:
            self.provision()
        logs = self.workdir / "logs"
        if self.layout in ("serve", "serve-single", "serve-api"):
            cmd = [*self.openbloo(), "serve", "--port", str(self.port), "--database-url", self.database_url]
            cmd += {"serve": [], "serve-single": ["--single-process"], "serve-api": ["--no-workers"]}[self.layout]
            self.procs = [Proc("serve", cmd, env=self.env, cwd=self.workdir, log_dir=logs)]
        elif self.layout == "split":
            self.procs = []
            for i in range(self.api_processes):
                cmd = [sys.executable, "-m", "bench.api_process", "--port", str(self.port)]
                cmd += ["--database-url", self.database_url]
                self.procs.append(Proc(f"api{i}", cmd, env=self._env_with_path(), cwd=self.workdir, log_dir=logs))
            for i in range(self.workers):
                cmd = [*self.openbloo(), "worker", "--database-url", self.database_url]
                self.procs.append(Proc(f"worker{i}", cmd, env=self.env, cwd=self.workdir, log_dir=logs))
        else:
            raise ValueError(f"unknown layout {self.layout!r}")
        try:
            for p in self.procs:
                if p.name.startswith(("serve", "api")):
                    wait_http(f"{self.url}/healthz", timeout, p)
            time.sleep(0.5)
        except Exception:
            self.stop()
            raise
        return self

    def _env_with_path(self) -> dict[str, str]:
        # bench.api_process is imported from the repository root.
        if self.src is not None:
            return self.env
        root = str(BENCH_DIR.parent)
        return {**self.env, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}

    @property
    def api_procs(self) -> list[Proc]:
        return [p for p in self.procs if not p.name.startswith("worker")]

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)

    def rss_kb(self) -> int:
        return sum(p.rss_kb() for p in self.procs)

    def memory_by_process(self) -> dict[str, tuple[int, int]]:
        """:meth:`Proc.memory_by_process` of every process of the deployment (``serve``'s two on SQLite)."""
        many = len(self.procs) > 1
        return {
            (f"{p.name} {role}" if many else role): kb for p in self.procs for role, kb in p.memory_by_process().items()
        }

    def kill9(self) -> None:
        for p in self.procs:
            p.kill9()

    def stop(self) -> None:
        for p in self.procs:
            p.stop()

    def wrk_env(self, **extra: str) -> dict[str, str]:
        return {"OPENBLOO_KEY": self.api_key, **extra}


# -- PostgreSQL scratch databases -------------------------------------------------------------------------------


class PgDatabase:
    """A database of its own on the local PostgreSQL server, dropped afterwards."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"openbloo_bench_{secrets.token_hex(4)}"
        base = admin_url.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"

    def __enter__(self) -> PgDatabase:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *_exc: object) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def pg_available(admin_url: str) -> str | None:
    """None if the PostgreSQL server answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(admin_url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
