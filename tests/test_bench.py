"""The benchmark harness itself: its percentile math, its tables, and one very short accept run."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from bench import report, sustain
from bench import scenarios as sc
from bench.report import accept_section, render
from bench.stats import percentile, ratio, summarize

# The load runs drive wrk (bench/README.md); a machine without it skips them, as the bench itself refuses to run.
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (Debian package 'wrk')")


def test_percentile_is_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_summary_and_ratio() -> None:
    s = summarize([3.0, 1.0, 2.0, 10.0])
    assert s == {"count": 4, "p50": 2.0, "p95": 10.0, "p99": 10.0, "max": 10.0}
    assert summarize([])["p50"] is None
    assert ratio(7700, 15400) == 0.5
    assert ratio(1, 0) is None and ratio(None, 3) is None


def test_accept_table_shows_ratios_to_kannel_and_the_naive_floor() -> None:
    runs = [
        {"stack": "Kannel", "peer": "kannel", "accepted_per_s": 10000.0, "lat_p99_ms": 3.0},
        {"stack": "naive", "peer": "floor-naive", "accepted_per_s": 4000.0},
        {"stack": "openbloo", "accepted_per_s": 5000.0, "non2xx_by_status": {"429": 3}, "socket_errors": 1},
        {
            "stack": "on pg",
            "accepted_per_s": 900.0,
            "cpu_us_per_accepted": 1045.2,
            "postgres_cpu_us_per_accepted": 812.5,
        },
        {"stack": "Litestar", "peer": "floor-litestar", "skipped": "no floor venv"},
    ]
    table = accept_section([runs])
    row = next(line for line in table.splitlines() if line.startswith("| openbloo"))
    assert "| 0.50 | 1.25 |" in row
    assert "429: 3, socket: 1" in row
    assert row.endswith("| – | – |")  # no CPU figures measured, and no PostgreSQL
    on_pg = next(line for line in table.splitlines() if line.startswith("| on pg"))
    assert on_pg.endswith("| 1,045.2 | 812.5 |")
    assert all(line.count("|") == table.splitlines()[0].count("|") for line in table.splitlines())
    assert "not run: no floor venv" in table
    text = render({"command": "python -m bench run", "machine": {"cores": 2}, "accept": [runs], "notes": ["x"]})
    assert "## Accepted sends" in text and "- x" in text


@needs_wrk
def test_a_two_second_accept_run_reports_accepted_sends_and_their_rows(tmp_path: Path) -> None:
    ctx = sc.Ctx(
        out=tmp_path,
        quick=True,
        secs=2,
        conns=4,
        warm=0,
        peers=None,
        pg_url="",
        cache=tmp_path / "cache",
        profile=False,
        seed=1,
        rss_secs=1,
    )
    r = sc.openbloo_accept(ctx, "sqlite", "serve-api")
    assert r["ok"] > 0 and r["non2xx"] == 0
    assert r["accepted_per_s"] > 0 and r["lat_p99_ms"] >= r["lat_p50_ms"] > 0
    # Every accepted request committed its messages (text arrays fan out to 3) with a job each; no webhook is
    # subscribed, so no event is stored.
    assert r["rows_in_db"] >= r["ok"]
    assert r["jobs_in_db"] == r["rows_in_db"] and r["events_in_db"] == 0


def run_inprocess(*args: str) -> dict[str, Any]:
    """``python -m bench.inprocess ARGS`` from the project's root; its result (the JSON of its last line)."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_in_process_drive_accepts_every_send() -> None:
    result = run_inprocess("--sends", "96", "--warmup", "32", "--workers")
    assert result["sends"] == 96
    assert result["statuses"] == {"202": 128}  # warm-up and measured sends, every one accepted
    assert result["accepted_per_s"] > 0 and result["cpu_us_per_send"] > 0


def test_a_memory_run_samples_where_the_memory_is_and_how_full_the_caches_are() -> None:
    result = run_inprocess("--memory-secs", "3", "--sample-secs", "1", "--window-secs", "2")
    assert result["sends"] > 0
    first, last = result["samples"][0], result["samples"][-1]
    assert last["t"] >= 3 and last["sends"] == result["sends"]
    for key in ("rss_mb", "rss_anon_mb", "py_blocks", "gc_objects", "pymalloc_used_mb", "malloc_used_mb"):
        assert last[key] > 0, key
    # The send path's chat-id caches fill as new chats are sent to, never past their bound.
    assert last["caches"]["chat_id_parsed"] > first["caches"]["chat_id_parsed"]
    for name, size in last["caches"].items():
        assert size <= result["cache_limits"][name]
    assert [w["from_s"] for w in result["windows"]] == [0, 2]
    assert "rss_mb_change" in result["windows"][1]


def test_memory_windows_are_means_with_the_change_from_the_window_before() -> None:
    from bench.memory import summarize

    samples = [
        {"t": t, "sends": 10 * t, "rss_mb": rss, "py_blocks": blocks, "caches": {"c": t}}
        for t, rss, blocks in [(0, 100.0, 10), (5, 102.0, 12), (10, 110.0, 20), (15, 112.0, 20)]
    ]
    rows = summarize(samples, 10)
    assert [(r["from_s"], r["samples"], r["sends"], r["rss_mb"], r["py_blocks"]) for r in rows] == [
        (0, 2, 50, 101.0, 11.0),
        (10, 2, 150, 111.0, 20.0),
    ]
    assert rows[1]["rss_mb_change"] == 10.0 and rows[1]["py_blocks_change"] == 9.0
    assert "rss_mb_change" not in rows[0] and rows[1]["caches"] == {"c": 15}


def test_a_process_is_measured_with_the_processes_it_started(tmp_path: Path) -> None:
    """``serve`` runs its workers in a child process: the harness counts its CPU and memory too."""
    import os
    import signal
    import sys

    from bench.harness import Proc

    from tests.helpers import wait_for

    child = "import time; time.sleep(60)"
    worker = [sys.executable, "-c", child, "worker"]  # named as serve's worker process is: by its command line
    parent = f"import subprocess, sys, time; subprocess.Popen({worker!r}); time.sleep(60)"
    proc = Proc("parent", [sys.executable, "-c", parent], cwd=tmp_path, log_dir=tmp_path / "logs")
    try:
        pids: list[int] = wait_for(lambda: proc.tree() if len(proc.tree()) == 2 else [], what="the child process")
        assert pids[0] == proc.pid
        one = Proc.__new__(Proc)  # the same measures for the parent alone
        one.pid = proc.pid
        one.tree = lambda: [proc.pid]  # type: ignore[method-assign]
        assert proc.rss_kb() > one.rss_kb() > 0
        assert proc.cpu_seconds() >= one.cpu_seconds()
        parts = proc.memory_by_process()
        assert set(parts) == {"api", "worker"}
        assert all(anon > 0 and file > 0 for anon, file in parts.values())
        assert sum(anon + file for anon, file in parts.values()) <= proc.rss_kb() + 1024  # read a moment apart
    finally:
        for pid in proc.tree()[1:]:
            os.kill(pid, signal.SIGKILL)
        proc.stop()


def test_rounds_get_a_median_table_with_ratios_taken_within_each_round() -> None:
    def round_of(kannel: float, naive: float, ours: float) -> list[dict[str, Any]]:
        return [
            {"stack": "Kannel", "peer": "kannel", "accepted_per_s": kannel},
            {"stack": "naive", "peer": "floor-naive", "accepted_per_s": naive},
            {"stack": "openbloo", "accepted_per_s": ours, "cpu_us_per_accepted": ours / 10},
        ]

    # The machine slows down in round 2: the ratios stay, the rates move.
    table = accept_section([round_of(1e4, 4e3, 4400.0), round_of(5e3, 2e3, 1800.0), round_of(1e4, 4e3, 4800.0)])
    medians = table.split("**Median of the 3 rounds**", 1)[1]
    row = next(line for line in medians.splitlines() if line.startswith("| openbloo"))
    assert row == "| openbloo | 3 | 4,400.0 | 0.44 | 1.10 | 440.0 |"
    assert "**Median" not in accept_section([round_of(1e4, 4e3, 4400.0)])


def _fixed_rate_run(rate: float, capacity: float) -> dict[str, Any]:
    """What a fixed-rate run reports against a pipeline that keeps up with ``capacity`` sends/s."""
    behind = rate > capacity
    return {
        "accepted_per_s": rate,
        "drain_s": round(0.5 + (rate - capacity) / capacity * 60, 1) if behind else 0.5,
        "messages_without_delivered_webhook": 0,
        "accept_to_webhook_ms": {"p99": 900.0 if behind else 40.0},
    }


def test_the_sustainable_rate_is_the_highest_fixed_rate_that_keeps_up() -> None:
    offered: list[float] = []

    def probe(rate: float) -> dict[str, Any]:
        offered.append(rate)
        return _fixed_rate_run(rate, capacity=650.0)

    rate, probes = sustain.search(probe, 843.0)
    # 843 and 716.6 fall behind, 609.1 keeps up; the middle of that last step (662.8) falls behind again
    assert offered[:3] == [843.0, pytest.approx(716.55), pytest.approx(609.07, rel=1e-3)]
    assert [p["kept_up"] for p in probes] == [False, False, True, False]
    assert rate == pytest.approx(609.07, rel=1e-3)
    assert probes[0]["drain_s"] > 1.0 and probes[2]["drain_s"] == 0.5


def test_a_bound_that_keeps_up_is_the_sustainable_rate_and_none_is_reported_when_nothing_keeps_up() -> None:
    assert sustain.search(lambda r: _fixed_rate_run(r, 1000.0), 800.0) == (
        800.0,
        [
            pytest.approx(
                {
                    "offered_per_s": 800.0,
                    "kept_up": True,
                    "accepted_per_s": 800.0,
                    "drain_s": 0.5,
                    "webhook_p99_ms": 40.0,
                    "messages_without_delivered_webhook": 0,
                }
            )
        ],
    )
    rate, probes = sustain.search(lambda r: _fixed_rate_run(r, 1.0), 100.0)
    assert rate is None and len(probes) == sustain.MAX_PROBES and not any(p["kept_up"] for p in probes)


def test_a_run_that_lost_a_webhook_or_an_answer_did_not_keep_up() -> None:
    good = _fixed_rate_run(300.0, 650.0)
    assert sustain.keeps_up(good, 300.0)
    assert not sustain.keeps_up({**good, "messages_without_delivered_webhook": 1}, 300.0)
    assert not sustain.keeps_up({**good, "accepted_per_s": 290.0}, 300.0)
    assert not sustain.keeps_up({**good, "drain_s": None}, 300.0)
    assert not sustain.keeps_up({**good, "non2xx": 3}, 300.0)


def test_the_sustainable_table_lists_every_fixed_rate_offered() -> None:
    text = report.sustainable_section(
        [
            {
                "store": "pg",
                "accepted_per_s": 1116.7,
                "delivered_webhooks_per_s": 843.0,
                "closed_loop_per_s": 843.0,
                "probes": [
                    {"offered_per_s": 843.0, "kept_up": False, "drain_s": 13.0},
                    {"offered_per_s": 716.6, "kept_up": True, "drain_s": 0.5},
                ],
                "sustainable_per_s": 716.6,
            }
        ]
    )
    assert "843.0: 13 (fell behind); 716.6: 0.5 (kept up)" in text
    assert text.rstrip().endswith("| 716.6 |")


def test_memory_growth_is_measured_from_the_window_the_caches_stopped_filling() -> None:
    from bench.memory import late_growth
    from bench.report import memory_section

    def window(minute: int, rss: float, blocks: int, parsed: int) -> dict[str, Any]:
        caches = {"chat_id_parsed": parsed}
        return {"from_s": 60 * minute, "sends": 1000 * minute, "rss_mb": rss, "py_blocks": blocks, "caches": caches}

    windows = [window(0, 100, 10, 5), window(1, 105, 15, 9), window(2, 106, 16, 10), window(3, 106.5, 15, 10)]
    assert late_growth(windows) == {
        "from_s": 120,
        "to_s": 180,
        "sends": 1000,
        "caches_full": True,
        "cache_entries": 0,
        "rss_mb": 0.5,
        "py_blocks": -1,
    }
    run = {"secs": 240, "workers": True, "sends": 3000, "accepted_per_s": 12.5, "cache_limits": {"chat_id_parsed": 64}}
    text = memory_section({**run, "windows": windows})
    assert "From the window at 120 s to the one at 180 s (the caches full), 1,000 sends: RSS +0.5 MB" in text
    assert "Python blocks -1" in text and "chat_id_parsed 10/64" in text
    # Still filling at the end: the later half of the run, with what the caches gained meanwhile.
    filling = [*windows[:2], window(2, 106, 16, 12), window(3, 106.5, 15, 13)]
    grown = late_growth(filling)
    assert grown is not None and grown["from_s"] == 120 and not grown["caches_full"] and grown["cache_entries"] == 1
    assert "(the caches gained 1 entries)" in memory_section({**run, "windows": filling})
    assert late_growth(windows[:2]) is None


def test_the_memory_run_tells_which_process_and_which_kind_of_memory_grew() -> None:
    from bench.report import rss_section

    mb = 1024
    by_process = [{"api": (90 * mb + 10 * i, 20 * mb), "worker": (70 * mb, 21 * mb + 100 * i)} for i in range(10)]
    grown = sc.memory_early_late(by_process, early=[0, 1], late=[8, 9])
    assert grown["api"] == {"anon_early_mb": 90.0, "anon_late_mb": 90.1, "file_early_mb": 20.0, "file_late_mb": 20.0}
    assert grown["worker"]["file_early_mb"] == 21.0 and grown["worker"]["file_late_mb"] == 21.8
    run = {"seconds": 600, "offered_per_s": 10.0, "samples": [(0.0, 1.0)], "by_process": grown}
    text = rss_section(run)
    assert "| api | 90.0 | 90.1 | 0.1 | 20.0 | 20.0 | 0.0 |" in text
    assert "| worker | 70.0 | 70.0 | 0.0 | 21.0 | 21.8 | 0.8 |" in text


def test_a_generated_history_is_what_openbloo_would_have_stored(tmp_path: Path) -> None:
    """The scale scenario's histories: each chat's newest time and its count of breaks of the time order are
    what its messages give, as after migration 0011 (without the newest time no page marks are kept, and the
    middle page of the scale table was the plain walk); a cached file of an older generation is made again."""
    import sqlite3

    from bench.dataset import GENERATION, cached_sqlite

    cache = tmp_path / "cache"
    db, meta = cached_sqlite(cache, 1000)
    assert meta["generation"] == GENERATION

    def chats_against_their_messages(path: Path) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return conn.execute(
                "SELECT c.chat_key, c.newest_message_time, c.time_order_breaks, max(m.time_sent), count(m.seq),"
                " c.message_count FROM chats c JOIN messages m ON m.chat_id = c.id GROUP BY c.id"
            ).fetchall()

    rows = chats_against_their_messages(db)
    assert len(rows) == meta["chats"]
    for key, newest, breaks, latest, stored, counted in rows:
        assert (newest, breaks, counted) == (latest, 0, stored), key

    # A file of generation 1 (newest times left NULL) is not reused.
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE chats SET newest_message_time = NULL")
        conn.commit()
    meta_path = db.with_suffix(".json")
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "generation"}))
    db_again, meta_again = cached_sqlite(cache, 1000)
    assert db_again == db and meta_again["generation"] == GENERATION
    assert meta_again["api_key"] != meta["api_key"]  # generated anew
    for key, newest, _breaks, latest, _stored, _counted in chats_against_their_messages(db):
        assert newest == latest, key


def test_a_history_copied_to_postgresql_reads_as_it_does_on_sqlite(tmp_path: Path, postgres_database: str) -> None:
    """The scale scenario's PostgreSQL databases: the cached SQLite history, row for row, and sendable."""
    import httpx
    from bench.dataset import cached_sqlite, copy_to_postgres
    from bench.harness import Deployment, PgDatabase, Proc

    db, meta = cached_sqlite(tmp_path / "cache", 1000)
    with PgDatabase(postgres_database) as pg:
        on_pg = Deployment(pg.url, tmp_path / "pg", layout="split", api_processes=1, workers=0, api_key=meta["api_key"])
        on_pg.cli("migrate")
        counts = copy_to_postgres(db, pg.url)
        assert (counts["messages"], counts["chats"], counts["api_keys"]) == (1000, meta["chats"], 1)
        shutil.copyfile(db, tmp_path / "copy.db")
        on_sqlite = Deployment(
            f"sqlite:///{tmp_path / 'copy.db'}", tmp_path / "sqlite", layout="serve-api", api_key=meta["api_key"]
        )
        try:
            answers = []
            hot = meta["hot_chat"].replace("+", "%2B")
            for dep in (on_sqlite.start(), on_pg.start()):
                with httpx.Client(
                    base_url=f"{dep.url}/v2/api", headers={"Authorization": f"Bearer {meta['api_key']}"}, timeout=30
                ) as c:
                    answers.append(
                        [
                            c.get("/chats", params={"limit": 10}).json(),
                            c.get(f"/chats/{hot}/messages", params={"limit": 50, "offset": 40}).json(),
                        ]
                    )
                    # The copied sequences are past the history: a new message takes the next key.
                    sent = c.post(f"/chats/{hot}/messages", json={"text": "after the history"})
                    assert sent.status_code == 202, sent.text
            assert answers[0] == answers[1]
            assert len(answers[1][0]["chats"]) == 10 and len(answers[1][1]["messages"]) == 50
        finally:
            on_sqlite.stop()
            on_pg.stop()
            Proc.stop_all()


def test_scale_rows_get_a_table_per_store_each_against_its_own_smallest_history() -> None:
    def row(store: str, n: int, ms: float) -> dict[str, Any]:
        timing = {"median_ms": ms, "p95_ms": ms, "max_ms": ms, "n": 60, "first_ms": ms * 5}
        reads = ("get_chats", "get_messages_first", "get_messages_deep", "get_messages_middle", "send")
        return {"store": store, "messages": n, "chats": 10, "deep_offset": 50, "middle_offset": 25, "rss_mb": 1.0} | {
            k: timing for k in reads
        }

    text = render(
        {
            "command": "python -m bench run",
            "machine": {"cores": 2},
            "scale": [row("sqlite", 1000, 2.0), row("sqlite", 10**6, 3.0), row("pg", 1000, 4.0), row("pg", 10**6, 4.4)],
        }
    )
    sqlite_part = text.split("## Scale (SQLite")[1].split("## Scale (PostgreSQL")[0]
    pg_part = text.split("## Scale (PostgreSQL")[1]
    assert "1.50×" in sqlite_part and "1.10×" not in sqlite_part
    assert "1.10×" in pg_part and "1.50×" not in pg_part
    # The middle page's cell (and only it) gives its first request, the one that finds the chat's page marks.
    assert sqlite_part.count("; first ") == 2 and "1.50×; first 15.00) @ offset 25" in sqlite_part


def test_a_base_tree_is_labelled_by_where_its_serve_runs_the_workers(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    assert sc.serves_workers_apart(None) and sc.serves_workers_apart(root)
    old = tmp_path / "src" / "openbloo"
    old.mkdir(parents=True)
    (old / "cli.py").write_text('def serve(no_workers: bool = typer.Option(False, "--no-workers")): ...\n')
    assert not sc.serves_workers_apart(tmp_path)


@needs_wrk
def test_a_drain_run_delivers_the_whole_backlog_and_reports_its_cost_per_message(tmp_path: Path) -> None:
    from bench.drain import drain_once

    r = drain_once(tmp_path / "drain", secs=1)
    assert r["messages"] > 100 and r["undelivered"] == 0
    assert r["cpu_us_per_message"] > 0 and r["messages_per_s"] > 0 and r["written_kb_per_message"] > 0


def test_an_e2e_row_of_the_baseline_tree_says_so() -> None:
    row = {"store": "pg", "offered_per_s": 184.3, "accept_to_simulator_ms": {"p50": 7.4}}
    table = report.e2e_section([row, {**row, "baseline": True}])
    assert "| pg | " in table and "| pg (baseline tree) | " in table


def test_the_local_postgresql_servers_cpu_is_read_from_its_processes(postgres_database: str) -> None:
    """What the database spends on openbloo's statements is measured where it is spent: in the server's
    processes, which a busy query makes busier."""
    import psycopg
    from bench.harness import local_postgres_cpu_seconds

    before = local_postgres_cpu_seconds()
    with psycopg.connect(postgres_database) as conn:
        conn.execute("SELECT count(*) FROM generate_series(1, 20000000)").fetchone()
        after = local_postgres_cpu_seconds()  # while its backend lives: an exited process's time is gone
    assert after - before >= 0.2


def test_this_tree_and_the_baseline_take_turns_to_go_first() -> None:
    from bench.__main__ import tree_order

    assert [tree_order(i, baseline=True) for i in range(3)] == [(False, True), (True, False), (False, True)]
    assert tree_order(1, baseline=False) == (False,)
