"""``python -m bench run [--quick] [--scenarios ...] [--peers DIR]``: run the benchmark, print the tables, and
write ``results.json`` + ``results.md`` under ``bench/results/<time>/`` (see bench/README.md)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import scenarios as sc
from bench.harness import BENCH_DIR, Proc, log
from bench.report import render

ALL = ("peers", "accept", "pg", "e2e", "kill9", "scale", "rss", "memory")
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def tree_order(pair: int, baseline: bool) -> tuple[bool, ...]:
    """Which tree runs first in the ``pair``-th before/after pair of an invocation (True: the baseline).

    The two take turns: run after this tree every time, the baseline ran PostgreSQL's closed loop 11–23 %
    faster in both of the twelfth round's invocations, where alternated runs of the same pair showed no
    difference (docs/benchmarks.md, twelfth round).
    """
    if not baseline:
        return (False,)
    return (False, True) if pair % 2 == 0 else (True, False)


def _sqlite_accept_runs(
    ctx: sc.Ctx, results: dict[str, Any], max_rate: dict[str, float], baseline: bool
) -> list[dict[str, Any]]:
    """The SQLite closed loops of one tree: every layout of this one (its ``serve`` sets the maximum rate and
    carries the profile), ``serve`` and accept only of the baseline."""
    if baseline:
        return [
            sc.openbloo_accept(ctx, "sqlite", baseline=True),
            sc.openbloo_accept(ctx, "sqlite", "serve-api", baseline=True),
        ]
    r = sc.openbloo_accept(ctx, "sqlite")
    max_rate["sqlite"] = max(max_rate.get("sqlite", 0), r["accepted_per_s"])
    if r.get("profile"):
        results["profile"] = r.pop("profile")
    runs = [r, sc.openbloo_accept(ctx, "sqlite", "serve-single"), sc.openbloo_accept(ctx, "sqlite", "serve-api")]
    if ctx.warm_chats_secs:
        runs.append(sc.openbloo_accept(ctx, "sqlite", warm_chats=True))
        runs.append(sc.openbloo_accept(ctx, "sqlite", "serve-api", warm_chats=True))
    return runs


def machine(pg_url: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {}
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["cores"] = os.cpu_count()
    info["CPU"] = cpu
    info["kernel"] = platform.release()
    info["Python"] = platform.python_version()
    info["SQLite"] = sqlite3.sqlite_version
    if pg_url:
        try:
            import psycopg

            with psycopg.connect(pg_url, connect_timeout=3) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                info["PostgreSQL"] = row[0] if row else "?"
        except Exception:
            info["PostgreSQL"] = "not reachable"
    for name, cmd in (("wrk", ["wrk", "--version"]), ("Kannel", ["/usr/sbin/bearerbox", "--version"])):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
            text = (done.stdout + done.stderr).strip().splitlines()
            info[name] = next(
                (t for t in text if "wrk" in t.lower() or "version" in t.lower()), text[0] if text else "?"
            )
        except (OSError, subprocess.TimeoutExpired):
            info[name] = "not installed"
    info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run scenarios and print their tables")
    run.add_argument("--quick", action="store_true", help="short runs (a few minutes in all), for validation")
    run.add_argument("--scenarios", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    run.add_argument(
        "--peers",
        type=Path,
        default=os.environ.get("OPENBLOO_BENCH_PEERS"),
        help="the peers directory (kannel/, floor/, common/); default $OPENBLOO_BENCH_PEERS",
    )
    run.add_argument(
        "--pg-url",
        default=os.environ.get("OPENBLOO_BENCH_PG_URL", DEFAULT_PG),
        help="a PostgreSQL database the harness may CREATE/DROP scratch databases from",
    )
    run.add_argument("--secs", type=float, help="seconds per load run (default 15, quick 6)")
    run.add_argument("--conns", type=int, default=32, help="wrk connections (default 32)")
    run.add_argument("--rounds", type=int, default=1, help="repeat the peers + accept block (default 1)")
    run.add_argument("--sizes", help="scale sizes, comma-separated (default 1000,100000,1000000; quick 1000,100000)")
    run.add_argument("--rss-secs", type=float, help="length of the memory run (default 600, quick 40)")
    run.add_argument(
        "--memory-secs", type=float, help="length of the in-process memory run, 'memory' (default 600, quick 20)"
    )
    run.add_argument("--kill-secs", type=float, help="length of each kill -9 run (default 30, quick 12)")
    run.add_argument("--profile", action="store_true", help="py-spy the SQLite accept and e2e runs")
    run.add_argument(
        "--floors",
        default="floor-naive,floor-lean",
        help="floors to run with 'peers' (floor-naive, floor-lean, floor-litestar)",
    )
    run.add_argument(
        "--baseline-src",
        type=Path,
        help="another openbloo source tree (e.g. a git worktree of the base commit) to run beside this "
        "one in 'accept' and 'pg': before/after figures from one invocation",
    )
    run.add_argument(
        "--e2e-fractions",
        default="0.5",
        help="fractions of the maximum rate the e2e scenario offers, comma-separated (default 0.5)",
    )
    run.add_argument(
        "--warm-chats",
        type=float,
        default=0.0,
        metavar="SECS",
        help="also run 'accept' in steady state: first a SECS-long pass that sends to the 10,000 "
        "chats in order, so the measured run's recipients are known (default 0: not run)",
    )
    run.add_argument("--seed", type=int, help="seed of the kill -9 moment (default: random, reported)")
    run.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("OPENBLOO_BENCH_CACHE", Path.home() / ".cache" / "openbloo-bench")),
        help="where generated scale databases are kept between runs",
    )
    run.add_argument("--out", type=Path, help="results directory (default bench/results/<time>)")
    args = ap.parse_args(argv)

    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(ALL)
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    out = (args.out or BENCH_DIR / "results" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    ctx = sc.Ctx(
        out=out,
        quick=quick,
        secs=args.secs or (6.0 if quick else 15.0),
        conns=args.conns,
        warm=2.0 if quick else 3.0,
        peers=args.peers.resolve() if args.peers else None,
        pg_url=args.pg_url,
        cache=args.cache,
        profile=args.profile,
        seed=args.seed if args.seed is not None else random.randrange(1 << 30),
        rss_secs=args.rss_secs or (40.0 if quick else 600.0),
        baseline_src=args.baseline_src.resolve() if args.baseline_src else None,
        warm_chats_secs=args.warm_chats,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, Any] = {
        "command": "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": quick,
        "secs": ctx.secs,
        "conns": ctx.conns,
        "seed": ctx.seed,
        "notes": [],
    }
    pg_problem = sc.check_pg(ctx) if any(s in chosen for s in ("pg", "e2e", "kill9")) else None
    results["machine"] = machine(None if pg_problem else ctx.pg_url)
    use_pg = "pg" in chosen and pg_problem is None
    if "pg" in chosen and pg_problem:
        results["notes"].append(f"PostgreSQL scenarios not run: {pg_problem}")
    max_rate: dict[str, float] = {}
    try:
        if any(s in chosen for s in ("peers", "accept", "pg")):
            results["accept"] = []
            for round_ in range(args.rounds):
                runs: list[dict[str, Any]] = []
                if "peers" in chosen:
                    for name in ["kannel", *[f.strip() for f in args.floors.split(",") if f.strip()]]:
                        runs.append(sc.peer(ctx, name))
                order = tree_order(round_, ctx.baseline_src is not None)
                if "accept" in chosen:
                    for baseline in order:
                        runs += _sqlite_accept_runs(ctx, results, max_rate, baseline)
                if use_pg:
                    for baseline in order:
                        r = sc.openbloo_accept(ctx, "pg", baseline=baseline)
                        if not baseline:
                            max_rate["pg"] = max(max_rate.get("pg", 0), r["accepted_per_s"])
                        runs.append(r)
                results["accept"].append(runs)
                _save(out, results)
        stores = ["sqlite"] + (["pg"] if use_pg else [])
        if "e2e" in chosen:
            results["e2e"] = []
            pairs = 0  # this tree and the baseline at this tree's rates, taking turns to go first
            for store in stores:
                if store not in max_rate:
                    log(f"e2e: calibrating the maximum rate on {store}")
                    max_rate[store] = sc.openbloo_accept(ctx, store)["accepted_per_s"]
                for fraction in [float(f) for f in args.e2e_fractions.split(",") if f.strip()]:
                    for baseline in tree_order(pairs, ctx.baseline_src is not None):
                        results["e2e"].append(sc.e2e(ctx, store, max_rate[store], fraction, baseline=baseline))
                    pairs += 1
                # The same targets at half the rate the pipeline sustains with the webhook subscriber.
                calibration = sc.sustainable_rate(ctx, store)
                results.setdefault("e2e_sustainable", []).append(calibration)
                if calibration["sustainable_per_s"] is not None:
                    for baseline in tree_order(pairs, ctx.baseline_src is not None):
                        results["e2e"].append(
                            sc.e2e(
                                ctx,
                                store,
                                calibration["sustainable_per_s"],
                                0.5,
                                basis="sustained with the webhook",
                                baseline=baseline,
                            )
                        )
                    pairs += 1
                _save(out, results)
        if "kill9" in chosen:
            secs = args.kill_secs or (12.0 if quick else 30.0)
            results["kill9"] = [sc.kill9(ctx, store, secs) for store in stores]
            if ctx.peers is not None and Path("/usr/sbin/bearerbox").exists():
                results["kill9"].append(sc.kannel_kill9(ctx, secs))
            _save(out, results)
        if "scale" in chosen:
            sizes = [int(s) for s in (args.sizes or ("1000,100000" if quick else "1000,100000,1000000")).split(",")]
            results["scale"] = [row for store in stores for row in sc.scale(ctx, sizes, store)]
            _save(out, results)
        if "rss" in chosen:
            if "sqlite" not in max_rate:
                max_rate["sqlite"] = sc.openbloo_accept(ctx, "sqlite")["accepted_per_s"]
            results["rss"] = sc.rss(ctx, max_rate["sqlite"] / 2, ctx.rss_secs)
            _save(out, results)
        if "memory" in chosen:
            results["memory"] = sc.memory(ctx, args.memory_secs or (20.0 if quick else 600.0))
    finally:
        Proc.stop_all()
        results["machine"]["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        _save(out, results)
    text = render(results)
    (out / "results.md").write_text(text)
    print(text)
    log(f"results: {out / 'results.json'} and {out / 'results.md'}")
    return 0


def _save(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
