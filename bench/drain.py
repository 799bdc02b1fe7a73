"""``python -m bench.drain [--secs S] [--rounds N] [--baseline-src TREE]``: what a worker process spends on a
delivered message.

A backlog is accepted first (``serve --no-workers`` under wrk with the realistic mix for S seconds, on a fresh
SQLite file, with the zero-delay simulator), then one ``openbloo worker`` is started on it alone and watched
until no job is pending: its CPU time, its rate and the bytes it wrote (``/proc/PID/io``), each per message.
Nothing else runs meanwhile, so the figures are the worker's own, without the accepting process's turns on
the write lock. With ``--baseline-src`` the rounds alternate with another source tree's (before/after).
Prints a JSON line per run, then the medians.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import Deployment, Proc, run_wrk
from bench.scenarios import jobs_in_own_table, query, wait_drained


def _written_bytes(pid: int) -> int:
    fields = dict(line.split(": ", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["wchar"])


def drain_once(work: Path, secs: float, src: Path | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """Accept a backlog for ``secs`` seconds, then drain it with one worker process; its costs per message."""
    dep = Deployment(f"sqlite:///{work / 'openbloo.db'}", work, layout="serve-api", src=src)
    dep.start()
    try:
        run_wrk(dep.url, conns=32, secs=secs, env=dep.wrk_env(PREFIX="b"))
    finally:
        dep.stop()
    if jobs_in_own_table(dep):  # a tree from before migration 0010
        pending = "SELECT count(*) FROM delivery_jobs WHERE state = 'pending'"
    else:
        pending = "SELECT count(*) FROM messages WHERE job_state = 'pending'"
    backlog = int(query(dep, pending)[0][0])
    cmd = [*dep.openbloo(), "worker", "--database-url", dep.database_url]
    worker = Proc("worker", cmd, env=dep.env, cwd=work, log_dir=work / "logs")
    try:
        cpu0 = worker.cpu_seconds()
        wall = wait_drained(dep, timeout, poll=0.25)
        if wall is None:
            raise RuntimeError(f"the worker did not drain {backlog} messages in {timeout:g} s")
        cpu, written = worker.cpu_seconds() - cpu0, _written_bytes(worker.pid)
    finally:
        worker.stop()
    undelivered = int(query(dep, "SELECT count(*) FROM messages WHERE status NOT IN ('delivered', 'read')")[0][0])
    return {
        "tree": str(src) if src else "this",
        "messages": backlog,
        "undelivered": undelivered,
        "cpu_us_per_message": round(cpu * 1e6 / max(1, backlog), 1),
        "messages_per_s": round(backlog / max(wall, 0.1), 1),
        "written_kb_per_message": round(written / 1024 / max(1, backlog), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--secs", type=float, default=8.0, help="seconds of load that build the backlog (8)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-src", type=Path, help="another source tree, alternated with this one")
    args = ap.parse_args(argv)
    trees: list[Path | None] = [None] + ([args.baseline_src.resolve()] if args.baseline_src else [])
    runs: dict[str, list[dict[str, Any]]] = {}
    root = Path(tempfile.mkdtemp(prefix="openbloo-drain-"))
    try:
        for i in range(args.rounds):
            for src in trees:
                work = root / f"{i}-{'base' if src else 'this'}"
                r = drain_once(work, args.secs, src)
                shutil.rmtree(work, ignore_errors=True)
                runs.setdefault(r["tree"], []).append(r)
                print(json.dumps(r), flush=True)
    finally:
        Proc.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    for tree, rs in runs.items():
        keys = ("cpu_us_per_message", "messages_per_s", "written_kb_per_message")
        print(json.dumps({"tree": tree, "median_of": len(rs)} | {k: statistics.median(r[k] for r in rs) for k in keys}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
