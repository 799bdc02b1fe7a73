"""The scenarios of ``python -m bench run``: each starts what it measures, measures it, stops it, and returns
plain data (dicts) for the report. See bench/README.md for what each one means.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import sustain
from bench.harness import (
    BENCH_DIR,
    Deployment,
    PgDatabase,
    Proc,
    free_port,
    local_postgres_cpu_seconds,
    log,
    pg_available,
    resident_kb,
    run_wrk,
)
from bench.probe import run_probe
from bench.stats import summarize

FINAL = ("delivered", "failed", "cancelled")
KEY_RE = re.compile(r"^b(\d{16})x")


@dataclass
class Ctx:
    out: Path
    quick: bool
    secs: float
    conns: int
    warm: float
    peers: Path | None
    pg_url: str
    cache: Path
    profile: bool
    seed: int
    rss_secs: float
    baseline_src: Path | None = None
    warm_chats_secs: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)

    def workdir(self, name: str) -> Path:
        path = self.out / "work" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


# -- stores ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def deployment(ctx: Ctx, store: str, name: str, **kw: Any) -> Iterator[Deployment]:
    """A fresh database and an openbloo deployment on it: ``sqlite`` (one serve) or ``pg`` (2 API + 1 worker)."""
    work = ctx.workdir(name)
    if store == "sqlite":
        dep = Deployment(f"sqlite:///{work / 'openbloo.db'}", work, **kw)
        try:
            yield dep
        finally:
            dep.stop()
    elif store == "pg":
        with PgDatabase(ctx.pg_url) as db:
            kw.setdefault("layout", "split")
            dep = Deployment(db.url, work, **kw)
            try:
                yield dep
            finally:
                dep.stop()
    else:
        raise ValueError(store)


def query(dep: Deployment, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A read straight from the deployment's database (qmark style; translated for PostgreSQL)."""
    url = dep.database_url
    if url.startswith("sqlite"):
        conn = sqlite3.connect(f"file:{url.split(':///', 1)[1]}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as conn:
        if params:
            return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), params).fetchall()]  # type: ignore[arg-type]
        return [tuple(r) for r in conn.execute(sql).fetchall()]  # type: ignore[arg-type]


def jobs_in_own_table(dep: Deployment) -> bool:
    """Whether the deployment's schema keeps delivery jobs in a table of their own (trees before migration
    0010, e.g. a ``--baseline-src``) rather than in the messages' rows."""
    if dep.database_url.startswith("sqlite"):
        sql = "SELECT count(*) FROM sqlite_master WHERE name = 'delivery_jobs'"
    else:
        sql = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'delivery_jobs'"
    return bool(query(dep, sql)[0][0])


def analyze(dep: Deployment) -> None:
    """PostgreSQL: gather the planner's statistics after the warm-up, as autovacuum does on a server within
    its first minute. A scratch database a few seconds old has none: the planner then takes every equality
    for selective (0.5 %), reads ``organization_id = $1 AND key IN (...)`` through the organization alone and
    hash-joins whole tables, and the same runs accepted about half as many sends (docs/benchmarks.md)."""
    if not dep.database_url.startswith("postgresql"):
        return
    import psycopg

    with psycopg.connect(dep.database_url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def cpu_run(dep: Deployment, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    on_postgres = dep.database_url.startswith("postgresql")
    per0 = {p.name: p.cpu_seconds() for p in dep.procs}
    pg0 = local_postgres_cpu_seconds() if on_postgres else 0.0
    c0, t0 = dep.cpu_seconds(), time.monotonic()
    result = fn()
    cpu = dep.cpu_seconds() - c0
    ok = result.get("ok") or 0
    if on_postgres:  # the database's share, which openbloo's processes do not show
        pg_cpu = local_postgres_cpu_seconds() - pg0
        result["postgres_cpu_s"] = round(pg_cpu, 2)
        result["postgres_cpu_us_per_accepted"] = round(pg_cpu * 1e6 / ok, 1) if ok else None
    result["server_cpu_s_by_process"] = {p.name: round(p.cpu_seconds() - per0.get(p.name, 0), 2) for p in dep.procs}
    result["server_cpu_s"] = round(cpu, 2)
    result["server_cpu_cores"] = round(cpu / max(1e-6, time.monotonic() - t0), 2)
    result["cpu_us_per_accepted"] = round(cpu * 1e6 / ok, 1) if ok else None
    return result


# -- accept: closed-loop throughput ----------------------------------------------------------------------------


LAYOUT_LABELS = {
    "serve": "serve (API; workers in the process it starts)",
    "serve-single": "serve --single-process (API + workers in one process)",
    "serve-api": "serve --no-workers (accept only)",
}


def serves_workers_apart(src: Path | None) -> bool:
    """Whether a source tree's ``serve`` runs its workers in a process of its own (it has had
    ``--single-process`` since it does); older trees ran them in the API's process."""
    if src is None:
        return True
    return "single-process" in (src / "src" / "openbloo" / "cli.py").read_text()


def openbloo_accept(
    ctx: Ctx, store: str, layout: str | None = None, *, baseline: bool = False, warm_chats: bool = False
) -> dict[str, Any]:
    """wrk, ``ctx.conns`` connections, ``ctx.secs`` seconds, the realistic mix, against a fresh database."""
    kw: dict[str, Any] = {}
    if layout:
        kw["layout"] = layout
    if baseline:
        kw["src"] = ctx.baseline_src
    name = f"accept-{store}-{layout or 'default'}{'-baseline' if baseline else ''}{'-warmchats' if warm_chats else ''}"
    with deployment(ctx, store, name, **kw) as dep:
        dep.start()
        label = LAYOUT_LABELS.get(dep.layout, f"{dep.api_processes} API + {dep.workers} worker processes")
        if baseline and dep.layout == "serve" and not serves_workers_apart(dep.src):
            label = LAYOUT_LABELS["serve-single"]  # a tree from before `serve` started a worker process
        log(f"accept: openbloo {store} {label}")
        url = dep.url
        known = None
        if warm_chats and ctx.warm_chats_secs:
            # Steady state: every one of the 10,000 chats gets a message first (in order), then the mix runs.
            run_wrk(url, conns=ctx.conns, secs=ctx.warm_chats_secs, env=dep.wrk_env(PREFIX="w", MIX="warm"))
            known = query(dep, "SELECT count(*) FROM chats")[0][0]
        if ctx.warm:
            run_wrk(url, conns=ctx.conns, secs=ctx.warm, env=dep.wrk_env(PREFIX="w"))
        analyze(dep)
        res = cpu_run(
            dep,
            lambda: run_wrk(
                url, conns=ctx.conns, secs=ctx.secs, env=dep.wrk_env(PREFIX="b"), out=ctx.out / f"{name}.wrk"
            ),
        )
        # One statement, so one snapshot: requests still in flight when wrk stops may commit between two
        # separate counts (a batch's message and its job then land on either side of them). Nobody subscribes
        # to webhooks here, so no event is stored (trees before events were stored for receivers only: one
        # message.queued a message).
        if jobs_in_own_table(dep):
            jobs_sql = (
                "SELECT count(*) FROM delivery_jobs j JOIN messages m ON m.id = j.message_id WHERE m.text LIKE 'b%'"
            )
        else:
            jobs_sql = "SELECT count(*) FROM messages WHERE text LIKE 'b%' AND job_state IS NOT NULL"
        rows, jobs, events = query(
            dep,
            f"SELECT (SELECT count(*) FROM messages WHERE text LIKE 'b%'), ({jobs_sql}), (SELECT count(*) FROM events)",
        )[0]
        if ctx.profile and store == "sqlite" and dep.layout in ("serve", "serve-single", "serve-api") and not baseline:
            res["profile"] = _profiled_run(ctx, dep, name, {})
        tree = " (baseline tree)" if baseline else ""
        steady = f", {known:,} chats known before the run" if known is not None else ""
        res.update(
            chats_known_before=known,
            stack=f"openbloo{tree} {store}, {label}{steady}",
            store=store,
            baseline=baseline,
            layout=dep.layout,
            rows_in_db=rows,
            jobs_in_db=jobs,
            events_in_db=events,
        )
        return res


def _profiled_run(ctx: Ctx, dep: Deployment, name: str, env: dict[str, str]) -> dict[str, Any]:
    """One more run of the same load with py-spy attached, for the profile alone.

    py-spy stops the process for every sample; a profiled run is slower than the measured one (it was a
    third slower on this machine), so no figure of the tables comes from it. Its keys start with "p".
    """
    spy = _start_profile(ctx, dep, name)
    if spy is None:
        return {"skipped": "py-spy not installed"}
    run_wrk(dep.url, conns=ctx.conns, secs=min(ctx.secs, 10.0), env=dep.wrk_env(PREFIX="p", **env))
    return _finish_profile(ctx, spy, name)


def _start_profile(ctx: Ctx, dep: Deployment, name: str) -> tuple[subprocess.Popen[bytes], Path] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() and shutil.which("py-spy") is None:
        log("profile: py-spy not installed (pip install py-spy); skipped")
        return None
    raw = ctx.out / f"{name}.pyspy.txt"
    secs = max(2, int(ctx.secs) - 2)
    cmd = [
        spy,
        "record",
        "-p",
        str(dep.procs[0].pid),
        "--subprocesses",  # serve's worker process too
        "-d",
        str(secs),
        "-r",
        "250",
        "--gil",
        # Without it py-spy stops the process for each sample, and on a virtual machine a running thread stops
        # at its next system call: samples gather on cheap calls (a tenth of them on the getpid() inside
        # asyncio.get_running_loop, 0.1 µs a call). Read without stopping, the samples fall where time goes.
        "--nonblocking",
        "-f",
        "raw",
        "-o",
        str(raw),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw


def _finish_profile(ctx: Ctx, spy: tuple[subprocess.Popen[bytes], Path], name: str) -> dict[str, Any]:
    proc, raw = spy
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(10)
    if not raw.exists():
        return {"error": "py-spy wrote no profile (it needs ptrace rights: run as root or allow ptrace)"}
    return summarize_profile(raw)


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Top frames of a py-spy raw (collapsed) profile: self time, inclusive time, and by thread."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n_s = line.rstrip().rpartition(" ")
        if not stack or not n_s.isdigit():
            continue
        n = int(n_s)
        total += n
        frames = stack.split(";")
        threads["writer thread" if "Writer._loop" in stack else "event loop" if "Runner.run" in stack else "other"] += n
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    pct = lambda c: round(100.0 * c / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "raw": str(raw),
        "threads": {k: pct(v) for k, v in threads.most_common()},
        "self": [(f, pct(c)) for f, c in self_c.most_common(top)],
        "inclusive": [(f, pct(c)) for f, c in incl.most_common(top * 3) if "openbloo/" in f or "sqlalchemy" in f][:top],
    }


# -- peers ---------------------------------------------------------------------------------------------------


PEER_RUNS = {
    "kannel": ("kannel/run_kannel_bench.sh", {"STORE_TYPE": "file"}, "Kannel 1.4.5, store-type = file"),
    "floor-naive": ("floor/run_floor_bench.sh", {"DB": "sqlite"}, "floor: FastAPI + Pydantic, commit per request"),
    "floor-lean": (
        "floor/run_gc_bench.sh",
        {"APP": "app", "SERVER": "uvicorn"},
        "floor: raw ASGI + msgspec + group commit (uvicorn)",
    ),
    "floor-litestar": (
        "floor/run_gc_bench.sh",
        {"APP": "litestar_app", "SERVER": "uvicorn"},
        "floor: Litestar + msgspec + group commit",
    ),
}


def peer(ctx: Ctx, name: str) -> dict[str, Any]:
    script, env, label = PEER_RUNS[name]
    out: dict[str, Any] = {"stack": label, "peer": name}
    if ctx.peers is None:
        return {**out, "skipped": "no peers directory (--peers DIR or OPENBLOO_BENCH_PEERS)"}
    if name == "kannel" and not Path("/usr/sbin/bearerbox").exists():
        return {**out, "skipped": "Kannel is not installed (bash $PEERS/kannel/setup_kannel.sh)"}
    floor_venv = Path(os.environ.get("FLOOR_VENV", "/tmp/openbloo-peers/venv-floor"))
    if name.startswith("floor") and not (floor_venv / "bin" / "uvicorn").exists():
        return {**out, "skipped": f"no floor venv at {floor_venv} (bash $PEERS/floor/setup_floor.sh)"}
    run_dir = ctx.out / "peers" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        **env,
        "SECS": f"{ctx.secs:g}",
        "CONNS": str(ctx.conns),
        "WARM_SECS": f"{max(0, int(ctx.warm)):d}",
        "RUN": str(run_dir / "run"),
        "FLOOR_VENV": str(floor_venv),
    }
    log(f"accept: peer {name}")
    done = subprocess.run(
        ["bash", str(ctx.peers / script)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=ctx.secs + ctx.warm + 420,
        check=False,
    )
    (run_dir / "stdout.txt").write_text(done.stdout + "\n--- stderr\n" + done.stderr)
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            res = json.loads(line)
            cpu = sum(float(res.get(k) or 0) for k in ("cpu_bearerbox_s", "cpu_smsbox_s", "cpu_server_s"))
            if cpu and res.get("ok"):
                res["cpu_us_per_accepted"] = round(cpu * 1e6 / res["ok"], 1)
            return {**res, **out}
    return {**out, "skipped": f"{script} printed no result (exit {done.returncode}); see {run_dir}/stdout.txt"}


# -- fixed offered rate + end-to-end latency -----------------------------------------------------------------


def e2e(
    ctx: Ctx, store: str, max_rate: float, fraction: float = 0.5, basis: str = "closed loop", *, baseline: bool = False
) -> dict[str, Any]:
    """A fraction (half) of the maximum rate, offered on a fixed schedule, with a status webhook to a receiver;
    ``baseline``: the same against ``ctx.baseline_src`` (before/after at one rate)."""
    rate = max(5.0, max_rate * fraction)
    name = f"e2e-{store}-{fraction:g}-{basis.replace(' ', '')}{'-baseline' if baseline else ''}"
    res = _with_status_webhook(ctx, store, name, rate, src=ctx.baseline_src if baseline else None)
    res.update(store=store, fraction=fraction, offered_per_s=round(rate, 1), max_rate_per_s=round(max_rate, 1))
    res["baseline"] = baseline
    res["rate_basis"] = basis
    return res


def sustainable_rate(ctx: Ctx, store: str) -> dict[str, Any]:
    """The maximum sustainable rate with a ``status`` webhook taking every event (:mod:`bench.sustain`).

    First a closed-loop run: the lower of accepted sends/s and ``message.delivered`` webhooks received/s
    over the same window is the upper bound. Then fixed-rate runs from that bound down, until one keeps up.
    """
    res = _with_status_webhook(ctx, store, f"e2e-{store}-closedloop", None)
    res["store"] = store
    res["closed_loop_per_s"] = round(min(res["accepted_per_s"], res["delivered_webhooks_per_s"]), 1)
    numbers = itertools.count(1)

    def probe(rate: float) -> dict[str, Any]:
        return _with_status_webhook(ctx, store, f"e2e-{store}-probe{next(numbers)}", rate)

    rate, res["probes"] = sustain.search(probe, res["closed_loop_per_s"])
    res["sustainable_per_s"] = round(rate, 1) if rate is not None else None
    return res


def _with_status_webhook(
    ctx: Ctx, store: str, name: str, rate: float | None, src: Path | None = None
) -> dict[str, Any]:
    """The mix at ``rate`` (None: closed loop) against a deployment (of source tree ``src``, else this one) with
    a ``status`` webhook to a receiver."""
    secs = ctx.secs
    with deployment(ctx, store, name, src=src) as dep:
        rport = free_port()
        records = dep.workdir / "webhooks.csv"
        receiver = Proc(
            "receiver",
            [
                sys.executable,
                "-m",
                "bench.receiver",
                "--port",
                str(rport),
                "--out",
                str(records),
                "--max-seconds",
                str(int(secs + 400)),
            ],
            env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            cwd=dep.workdir,
            log_dir=dep.workdir / "logs",
        )
        paced = {"RATE": f"{rate:.1f}"} if rate is not None else {}
        try:
            dep.start()
            what = f"at {rate:.0f}/s offered" if rate is not None else "closed loop (the sustainable rate)"
            log(f"e2e: openbloo {store} {what}, with a status webhook")
            hook = httpx.post(
                f"{dep.url}/v2/api/webhooks",
                json={"webhook_url": f"http://127.0.0.1:{rport}/hook", "webhook_type": "status"},
                headers={"Authorization": f"Bearer {dep.api_key}"},
                timeout=10,
            )
            hook.raise_for_status()
            if ctx.warm:
                run_wrk(dep.url, conns=ctx.conns, secs=ctx.warm, env=dep.wrk_env(PREFIX="w", **paced))
            analyze(dep)
            wrk_out = ctx.out / f"{name}.wrk"
            window_us = [time.time_ns() // 1000]
            res = cpu_run(
                dep,
                lambda: run_wrk(dep.url, conns=ctx.conns, secs=secs, env=dep.wrk_env(PREFIX="b", **paced), out=wrk_out),
            )
            window_us.append(time.time_ns() // 1000)
            # A closed-loop run outpaces the webhooks on purpose: its backlog is not waited for.
            res["drain_s"] = wait_drained(dep, timeout=120) if rate is not None else None
            if ctx.profile and store == "sqlite" and rate is not None:
                res["profile"] = _profiled_run(ctx, dep, name, paced)
            time.sleep(1.0)
        finally:
            receiver.stop()
        res.update(_e2e_latencies(dep, records))
        delivered_in_window = _webhooks_between(records, "message.delivered", *window_us)
        res["delivered_webhooks_per_s"] = round(delivered_in_window / ((window_us[1] - window_us[0]) / 1e6), 1)
        return res


def _webhooks_between(records: Path, event: str, start_us: int, end_us: int) -> int:
    if not records.exists():
        return 0
    n = 0
    for line in records.read_text().splitlines():
        recv, got, _mid = line.split(",", 2)
        if got == event and start_us <= int(recv) <= end_us:
            n += 1
    return n


def wait_drained(dep: Deployment, timeout: float, poll: float = 0.5) -> float | None:
    """Seconds until every measured message is final and no webhook delivery is pending (None: timed out)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        open_msgs = query(dep, "SELECT count(*) FROM messages WHERE status IN ('queued', 'sent')")[0][0]
        pending = query(dep, "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'")[0][0]
        if open_msgs == 0 and pending == 0:
            return round(time.monotonic() - t0, 1)
        time.sleep(poll)
    return None


def _e2e_latencies(dep: Deployment, records: Path) -> dict[str, Any]:
    from openbloo.transports.simulator import read_log

    sent_us: dict[str, int] = {}
    for mid, text in query(dep, "SELECT id, text FROM messages WHERE text LIKE 'b%'"):
        m = KEY_RE.match(text or "")
        if m:
            sent_us[mid] = int(m.group(1))
    handoff_ms: dict[str, int] = {}
    for entry in read_log(dep.sim_state):
        if entry["outcome"] == "sent" and entry["message_id"] in sent_us:
            handoff_ms.setdefault(entry["message_id"], int(entry["at"]))
    webhook_us: dict[str, int] = {}
    events: Counter[str] = Counter()
    if records.exists():
        for line in records.read_text().splitlines():
            recv, event, mid = line.split(",", 2)
            events[event] += 1
            if event == "message.delivered" and mid in sent_us:
                webhook_us.setdefault(mid, int(recv))
    to_sim = [handoff_ms[m] - sent_us[m] / 1000 for m in handoff_ms]
    to_hook = [(webhook_us[m] - sent_us[m]) / 1000 for m in webhook_us]
    return {
        "measured_messages": len(sent_us),
        "accept_to_simulator_ms": summarize(to_sim),
        "accept_to_webhook_ms": summarize(to_hook),
        "webhook_events": dict(events),
        "messages_without_delivered_webhook": len(sent_us) - len(webhook_us),
    }


# -- durability under kill -9 ------------------------------------------------------------------------------


def kill9(ctx: Ctx, store: str, seconds: float) -> dict[str, Any]:
    rnd = random.Random(ctx.seed)
    kill_at = round(rnd.uniform(0.25, 0.6) * seconds, 2)
    with deployment(ctx, store, f"kill9-{store}") as dep:
        dep.start()
        victims = ", ".join(p.name for p in dep.procs)
        log(f"kill9: openbloo {store}: probe {seconds:g} s, kill -9 of {victims} at {kill_at} s")
        box: dict[str, Any] = {}
        probe = threading.Thread(target=lambda: box.update(r=run_probe(dep.port, dep.api_key, seconds=seconds)))
        probe.start()
        time.sleep(kill_at)
        accepted_before = sum(1 for _ in query(dep, "SELECT 1 FROM messages WHERE text LIKE 'k%'"))
        dep.kill9()
        time.sleep(1.0)
        dep.start()
        probe.join(seconds + 60)
        result = box["r"]
        ids = set(result.accepted)
        t0 = time.monotonic()
        statuses: dict[str, str] = {}
        while time.monotonic() - t0 < 240:
            statuses = dict(query(dep, "SELECT id, status FROM messages WHERE text LIKE 'k%'"))  # type: ignore[arg-type]
            if all(statuses.get(i) in FINAL for i in ids):
                break
            time.sleep(1.0)
        settle_s = round(time.monotonic() - t0, 1)
        from openbloo.transports.simulator import read_log

        sent = Counter(e["message_id"] for e in read_log(dep.sim_state) if e["outcome"] == "sent")
        final = {i for i in ids if statuses.get(i) in FINAL}
        delivered = {i for i in ids if statuses.get(i) == "delivered"}
        return {
            "store": store,
            "processes_killed": victims,
            "seconds": seconds,
            "kill_at_s": kill_at,
            "stored_before_kill": accepted_before,
            "accepted": len(ids),
            "final": len(final),
            "delivered": len(delivered),
            "handed_to_simulator": sum(1 for i in ids if sent.get(i)),
            "lost": len(ids - final),
            "lost_examples": sorted(ids - final)[:5],
            "duplicated": sum(1 for i in sent if sent[i] > 1 and i in statuses),
            "unacked_stored": len(set(statuses) - ids),
            "settle_s": settle_s,
            "probe": {
                "sent": result.sent,
                "non2xx": result.non2xx,
                "conn_errors": result.conn_errors,
                "timeouts": result.timeouts,
                "ok_per_s": result.ok_per_s,
            },
        }


# -- scale: reads and a send over stored history -----------------------------------------------------------


def _time_requests(fn: Callable[[], httpx.Response], n: int, warm: int = 5) -> dict[str, Any]:
    first = None  # the first request's time: before anything this read warms (caches, a chat's page marks)
    for _ in range(warm):
        t0 = time.perf_counter()
        fn().raise_for_status()
        first = (time.perf_counter() - t0) * 1000 if first is None else first
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = fn()
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    s = summarize(times)
    median = round(statistics.median(times), 2)
    return {"median_ms": median, "p95_ms": s["p95"], "max_ms": s["max"], "n": n, "first_ms": round(first or 0, 2)}


def _measure_reads(dep: Deployment, meta: dict[str, Any], deep: int, middle: int, reps: int) -> dict[str, Any]:
    hot, some = meta["hot_chat"].replace("+", "%2B"), meta["some_chat"].replace("+", "%2B")
    seq = iter(range(10**9))
    auth = {"Authorization": f"Bearer {dep.api_key}"}
    with httpx.Client(base_url=f"{dep.url}/v2/api", headers=auth, timeout=30) as c:
        return {
            # Ten chats a page: the smallest database holds ten, so every size answers a full page of the
            # same length (with 50, the 1 k database answered 10 rows and the 1 M one 50: the comparison
            # measured the page size, not the stored history).
            "get_chats": _time_requests(lambda: c.get("/chats", params={"limit": 10}), reps),
            "get_messages_first": _time_requests(lambda: c.get(f"/chats/{hot}/messages", params={"limit": 50}), reps),
            "get_messages_deep": _time_requests(
                lambda: c.get(f"/chats/{hot}/messages", params={"limit": 50, "offset": deep}), reps
            ),
            # Pages past the middle are read from the other end of the index: the middle one is the slowest.
            "get_messages_middle": _time_requests(
                lambda: c.get(f"/chats/{hot}/messages", params={"limit": 50, "offset": middle}), reps
            ),
            "send": _time_requests(
                lambda: c.post(f"/chats/{some}/messages", json={"text": f"scale probe {next(seq)}"}), reps
            ),
        }


def scale(ctx: Ctx, sizes: list[int], store: str = "sqlite") -> list[dict[str, Any]]:
    """Reads and a send over 1 k … 1 M stored messages: a copy of the cached SQLite history for ``sqlite``
    (one ``serve``), the same rows copied into a fresh database for ``pg`` (2 API + 1 worker processes)."""
    from bench.dataset import cached_sqlite, copy_to_postgres

    out = []
    for n in sizes:
        db, meta = cached_sqlite(ctx.cache, n)
        work = ctx.workdir(f"scale-{store}-{n}")
        row: dict[str, Any] = {
            "store": store,
            "messages": n,
            "chats": meta["chats"],
            "hot_chat_messages": meta["hot_chat_messages"],
            "deep_offset": max(0, meta["hot_chat_messages"] - 50),
            "middle_offset": max(0, meta["hot_chat_messages"] // 2 - 25),
            "generate_s": meta.get("generate_s"),
        }
        with contextlib.ExitStack() as stack:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
            if store == "pg":
                pg = stack.enter_context(PgDatabase(ctx.pg_url))
                dep = Deployment(pg.url, work, layout="split", api_key=meta["api_key"])
                dep.cli("migrate")
                t0 = time.monotonic()
                copy_to_postgres(db, pg.url)
                row["copy_s"] = round(time.monotonic() - t0, 1)
            else:
                copy = work / "openbloo.db"
                shutil.copyfile(db, copy)
                dep = Deployment(f"sqlite:///{copy}", work, api_key=meta["api_key"])
            stack.callback(dep.stop)
            dep.start()
            log(f"scale: {store}, {n} stored messages")
            row.update(_measure_reads(dep, meta, row["deep_offset"], row["middle_offset"], 30 if ctx.quick else 60))
            row["rss_mb"] = round(dep.rss_kb() / 1024, 1)
        out.append(row)
    return out


# -- resident memory over a long run -----------------------------------------------------------------------


def rss(ctx: Ctx, rate: float, seconds: float) -> dict[str, Any]:
    with deployment(ctx, "sqlite", "rss") as dep:
        dep.start()
        log(f"rss: openbloo sqlite for {seconds:g} s at {rate:.0f}/s offered")
        box: dict[str, Any] = {}
        load = threading.Thread(
            target=lambda: box.update(
                r=run_wrk(dep.url, conns=ctx.conns, secs=seconds, env=dep.wrk_env(PREFIX="r", RATE=f"{rate:.1f}"))
            )
        )
        t0 = time.monotonic()
        load.start()
        samples: list[tuple[float, float]] = []
        by_process: list[dict[str, tuple[int, int]]] = []
        step = 5.0 if seconds <= 120 else 10.0
        while load.is_alive():
            by_process.append(dep.memory_by_process())
            samples.append((round(time.monotonic() - t0, 1), round(resident_kb(by_process[-1]) / 1024, 1)))
            load.join(step)
        wrk = box.get("r", {})
        rows = query(dep, "SELECT count(*) FROM messages")[0][0]
        warm = [i for i, (t, _) in enumerate(samples) if t >= min(60.0, seconds / 4)]
        tenth = max(1, len(warm) // 10)
        early, late = warm[:tenth], warm[-tenth:]
        first, last = [samples[i][1] for i in early], [samples[i][1] for i in late]
        return {
            "seconds": seconds,
            "offered_per_s": round(rate, 1),
            "accepted_per_s": wrk.get("accepted_per_s"),
            "non2xx": wrk.get("non2xx"),
            "lat_p99_ms": wrk.get("lat_p99_ms"),
            "messages_in_db": rows,
            "rss_start_mb": samples[0][1] if samples else None,
            "rss_early_mb": round(statistics.mean(first), 1) if first else None,
            "rss_late_mb": round(statistics.mean(last), 1) if last else None,
            "rss_max_mb": max(mb for _, mb in samples) if samples else None,
            "samples": samples,
            "by_process": memory_early_late(by_process, early, late),
        }


def memory_early_late(
    by_process: list[dict[str, tuple[int, int]]], early: list[int], late: list[int]
) -> dict[str, dict[str, float]]:
    """Each process's mean anonymous and file-backed resident MB over the early and the late samples: which
    process, and which kind of memory, grew."""

    def mean_mb(role: str, kind: int, picks: list[int]) -> float:
        vals = [by_process[i][role][kind] for i in picks if role in by_process[i]]
        return round(statistics.mean(vals) / 1024, 1) if vals else 0.0

    roles = sorted({role for i in early + late for role in by_process[i]})
    return {
        role: {
            "anon_early_mb": mean_mb(role, 0, early),
            "anon_late_mb": mean_mb(role, 0, late),
            "file_early_mb": mean_mb(role, 1, early),
            "file_late_mb": mean_mb(role, 1, late),
        }
        for role in roles
    }


def memory(ctx: Ctx, seconds: float) -> dict[str, Any]:
    """Where the memory is: the in-process drive of the accept path (the API process's work: the app, its
    caches, the writer) sending as fast as it goes for ``seconds``, reading its own memory as it runs
    (:mod:`bench.memory`). The accepting process is where ``rss`` saw memory grow (the worker process stayed
    flat, docs/benchmarks.md); at this drive's rate the bounded caches fill within minutes, and what follows
    shows whether anything else grows. ``python -m bench.inprocess --workers --memory-secs S`` runs the same
    with the workers in the process."""
    log(f"memory: in-process drive of the accept path for {seconds:g} s")
    cmd = [sys.executable, "-m", "bench.inprocess", "--memory-secs", f"{seconds:g}"]
    if seconds < 120:
        cmd += ["--sample-secs", "2", "--window-secs", f"{max(4.0, seconds / 4):g}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300, check=False, cwd=BENCH_DIR.parent)
    (ctx.out / "memory.stderr.txt").write_text(done.stderr)
    if done.returncode != 0 or not done.stdout.strip():
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def check_pg(ctx: Ctx) -> str | None:
    return pg_available(ctx.pg_url)


def kannel_kill9(ctx: Ctx, seconds: float) -> dict[str, Any]:
    """Kannel's own kill -9 run (the peers' kannel_kill9.sh): bearerbox killed under load, file store."""
    assert ctx.peers is not None
    kill_at = round(random.Random(ctx.seed).uniform(0.25, 0.6) * seconds, 2)
    run_dir = ctx.out / "peers" / "kannel-kill9"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "KILL": "bearerbox",
        "STORE_TYPE": "file",
        "SECS": f"{int(seconds)}",
        "KILL_AT": f"{max(1, int(kill_at))}",
        "RUN": str(run_dir / "run"),
    }
    log(f"kill9: Kannel, bearerbox killed at {int(kill_at)} s of {int(seconds)}")
    done = subprocess.run(
        ["bash", str(ctx.peers / "kannel/kannel_kill9.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 600,
        check=False,
    )
    (run_dir / "stdout.txt").write_text(done.stdout + "\n--- stderr\n" + done.stderr)
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            r = json.loads(line)
            return {
                "store": "Kannel 1.4.5 (store-type = file)",
                "processes_killed": "bearerbox",
                "seconds": seconds,
                "kill_at_s": int(kill_at),
                "accepted": r["accepted"],
                "final": r["delivered_unique"],
                "delivered": r["delivered_unique"],
                "lost": r["lost"],
                "duplicated": r["duplicates"],
                "unacked_stored": r.get("unacked_delivered", 0),
                "settle_s": None,
                "raw": r,
            }
    return {"store": "Kannel", "skipped": f"kannel_kill9.sh printed no result (exit {done.returncode})"}
