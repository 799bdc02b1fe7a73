"""Markdown tables from a run's results (the same tables ``docs/benchmarks.md`` quotes)."""

from __future__ import annotations

from typing import Any

from bench.stats import median, ratio


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _errors(r: dict[str, Any]) -> str:
    parts = [f"{k}: {v}" for k, v in sorted((r.get("non2xx_by_status") or {}).items())]
    if r.get("socket_errors"):
        parts.append(f"socket: {r['socket_errors']}")
    if r.get("err_timeout"):
        parts.append(f"timeout: {r['err_timeout']}")
    if not parts and r.get("non2xx"):
        parts.append(f"non-2xx: {r['non2xx']}")
    return ", ".join(parts) or "0"


def machine_section(machine: dict[str, Any]) -> str:
    rows = [[k, str(v)] for k, v in machine.items()]
    return _table(["", ""], rows)


def _peer_rates(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The accepted sends/s of each peer that ran in one round (Kannel, the floors), by peer name."""
    return {r["peer"]: r.get("accepted_per_s") for r in runs if r.get("peer") and not r.get("skipped")}


_ACCEPT_HEADERS = [
    "stack",
    "accepted/s",
    "× Kannel",
    "× naive floor",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "errors",
    "server CPU µs / accepted",
    "PostgreSQL CPU µs / accepted",
]


def accept_section(rounds: list[list[dict[str, Any]]]) -> str:
    out = []
    for i, runs in enumerate(rounds, 1):
        peers = _peer_rates(runs)
        kannel, naive = peers.get("kannel"), peers.get("floor-naive")
        rows = []
        for r in runs:
            if r.get("skipped"):
                rows.append([r["stack"], "not run: " + r["skipped"]] + [""] * (len(_ACCEPT_HEADERS) - 2))
                continue
            acc = r.get("accepted_per_s")
            rows.append(
                [
                    r["stack"],
                    acc,
                    _f(ratio(acc, kannel), 2),
                    _f(ratio(acc, naive), 2),
                    r.get("lat_p50_ms"),
                    r.get("lat_p95_ms"),
                    r.get("lat_p99_ms"),
                    r.get("lat_max_ms"),
                    _errors(r),
                    r.get("cpu_us_per_accepted"),
                    r.get("postgres_cpu_us_per_accepted"),
                ]
            )
        title = f"Round {i}" if len(rounds) > 1 else ""
        table = _table(_ACCEPT_HEADERS, rows)
        out.append((f"**{title}**\n\n" if title else "") + table)
    if len(rounds) > 1:
        out.append(f"**Median of the {len(rounds)} rounds** (each ratio taken within its round)\n\n" + _medians(rounds))
    return "\n\n".join(out)


def _medians(rounds: list[list[dict[str, Any]]]) -> str:
    """Per stack, the median over rounds of its rate, of its ratios to the same round's Kannel and naive floor,
    and of its CPU per send: one noisy minute moves one round, not the figure."""
    by_stack: dict[str, list[tuple[Any, Any, Any, Any]]] = {}
    for runs in rounds:
        peers = _peer_rates(runs)
        for r in runs:
            if r.get("skipped"):
                continue
            acc = r.get("accepted_per_s")
            by_stack.setdefault(r["stack"], []).append(
                (
                    acc,
                    ratio(acc, peers.get("kannel")),
                    ratio(acc, peers.get("floor-naive")),
                    r.get("cpu_us_per_accepted"),
                )
            )
    rows = []
    for stack, values in by_stack.items():
        cols = [median([v[i] for v in values if v[i] is not None]) for i in range(4)]
        rows.append([stack, len(values), cols[0], _f(cols[1], 2), _f(cols[2], 2), cols[3]])
    return _table(["stack", "rounds", "accepted/s", "× Kannel", "× naive floor", "server CPU µs / accepted"], rows)


def e2e_section(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        s, h = r.get("accept_to_simulator_ms") or {}, r.get("accept_to_webhook_ms") or {}
        rows.append(
            [
                f"{r['store']} (baseline tree)" if r.get("baseline") else r["store"],
                r.get("rate_basis", "closed loop"),
                r.get("max_rate_per_s"),
                f"{_f(r.get('offered_per_s'))} ({r.get('fraction', 0.5):g}×)",
                r.get("accepted_per_s"),
                r.get("lat_p50_ms"),
                r.get("lat_p95_ms"),
                r.get("lat_p99_ms"),
                r.get("lat_max_ms"),
                _errors(r),
                s.get("p50"),
                s.get("p99"),
                h.get("p50"),
                h.get("p99"),
                r.get("measured_messages"),
                r.get("messages_without_delivered_webhook"),
                "timed out (120 s)" if r.get("drain_s") is None else r.get("drain_s"),
            ]
        )
    return _table(
        [
            "store",
            "maximum measured as",
            "max rate/s",
            "offered/s",
            "accepted/s",
            "accept p50 ms",
            "p95",
            "p99",
            "max",
            "errors",
            "→ simulator p50 ms",
            "p99",
            "→ webhook p50 ms",
            "p99",
            "messages",
            "no webhook",
            "drain s",
        ],
        rows,
    )


def sustainable_section(runs: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["store"],
            r.get("accepted_per_s"),
            r.get("delivered_webhooks_per_s"),
            r.get("closed_loop_per_s"),
            r.get("lat_p99_ms"),
            r.get("cpu_us_per_accepted"),
            _probes(r.get("probes") or []),
            r.get("sustainable_per_s") if r.get("sustainable_per_s") is not None else "none kept up",
        ]
        for r in runs
    ]
    headers = ["store", "closed loop: accepted/s", "delivered webhooks/s", "bound/s", "accept p99 ms"]
    headers += ["server CPU µs / accepted", "fixed rates offered: drain s", "sustainable/s"]
    return _table(headers, rows)


def _probes(probes: list[dict[str, Any]]) -> str:
    def one(p: dict[str, Any]) -> str:
        drain = "timed out" if p.get("drain_s") is None else f"{p['drain_s']:g}"
        return f"{_f(p['offered_per_s'])}: {drain} ({'kept up' if p['kept_up'] else 'fell behind'})"

    return "; ".join(one(p) for p in probes)


def kill9_section(runs: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["store"],
            r["processes_killed"],
            f"{r['kill_at_s']} s of {r['seconds']:g}",
            r["accepted"],
            r["final"],
            r["delivered"],
            r["lost"],
            r["duplicated"],
            r["unacked_stored"],
            r["settle_s"],
        ]
        for r in runs
        if not r.get("skipped")
    ]
    rows += [
        [r.get("store", r.get("stack", "")), "not run: " + r["skipped"], "", "", "", "", "", "", "", ""]
        for r in runs
        if r.get("skipped")
    ]
    return _table(
        [
            "peer / store",
            "killed",
            "kill at",
            "accepted",
            "final state",
            "delivered",
            "lost",
            "duplicated",
            "stored but unacked",
            "settle s",
        ],
        rows,
    )


SCALE_STORES = {"sqlite": "SQLite, `serve`", "pg": "PostgreSQL, 2 API + 1 worker processes"}


def scale_section(rows_in: list[dict[str, Any]]) -> str:
    """One store's rows, each size against the smallest."""
    rows = []
    base = rows_in[0] if rows_in else None
    for r in rows_in:

        def cell(key: str, r: dict[str, Any] = r, first: bool = False) -> str:
            med = r[key]["median_ms"]
            rel = ratio(med, base[key]["median_ms"]) if base else None
            # The middle page's first request finds the chat's page marks; the ones after it start from them.
            cold = f"; first {r[key]['first_ms']:.2f}" if first and "first_ms" in r[key] else ""
            return f"{med:.2f} (p95 {r[key]['p95_ms']:.2f}; {rel:.2f}×{cold})" if rel is not None else f"{med:.2f}"

        rows.append(
            [
                r["messages"],
                r["chats"],
                cell("get_chats"),
                cell("get_messages_first"),
                f"{cell('get_messages_deep')} @ offset {r['deep_offset']:,}",
                f"{cell('get_messages_middle', first=True)} @ offset {r['middle_offset']:,}"
                if "get_messages_middle" in r
                else "–",
                cell("send"),
                r.get("rss_mb"),
            ]
        )
    return _table(
        [
            "stored messages",
            "chats",
            "GET /chats ms",
            "GET messages, first page ms",
            "last page ms",
            "middle page ms",
            "send ms (sequential)",
            "server RSS MB",
        ],
        rows,
    )


def memory_section(r: dict[str, Any]) -> str:
    if r.get("error"):
        return f"not run: {r['error']}"
    limits = r.get("cache_limits") or {}
    rows = []
    for w in r.get("windows") or []:
        caches = ", ".join(f"{n} {v:,}/{limits.get(n, 0):,}" for n, v in w["caches"].items() if v)
        rows.append(
            [
                f"{w['from_s']:g}",
                w["sends"],
                w.get("rss_mb"),
                w.get("rss_mb_change"),
                w.get("malloc_used_mb"),
                w.get("pymalloc_used_mb"),
                w.get("py_blocks"),
                w.get("gc_objects"),
                caches,
            ]
        )
    table = _table(
        [
            "window from s",
            "sends by its end",
            "RSS MB",
            "change MB",
            "malloc in use MB",
            "pymalloc in use MB",
            "Python blocks",
            "GC objects",
            "caches (entries/bound)",
        ],
        rows,
    )
    head = (
        f"{r['secs']:g} s, workers in the process: {r.get('workers')}, {r['sends']:,} sends "
        f"({r['accepted_per_s']:,.1f}/s). Means of the samples in each window."
    )
    from bench.memory import late_growth

    grown = late_growth(r.get("windows") or [])
    if grown is None:
        tail = "Too short a run for a figure of its later part."
    else:
        since = "the caches full" if grown["caches_full"] else f"the caches gained {grown['cache_entries']:,} entries"
        tail = (
            f"From the window at {grown['from_s']:g} s to the one at {grown['to_s']:g} s ({since}), "
            f"{grown['sends']:,} sends: RSS {grown.get('rss_mb', 0):+g} MB, malloc in use "
            f"{grown.get('malloc_used_mb', 0):+g} MB, pymalloc in use {grown.get('pymalloc_used_mb', 0):+g} MB, "
            f"Python blocks {grown.get('py_blocks', 0):+,}, GC objects {grown.get('gc_objects', 0):+,}."
        )
    return f"{head}\n\n{table}\n\n{tail}"


def rss_section(r: dict[str, Any]) -> str:
    table = _table(
        [
            "run",
            "offered/s",
            "accepted/s",
            "messages in DB",
            "RSS start MB",
            "RSS early MB",
            "RSS late MB",
            "RSS max MB",
        ],
        [
            [
                f"{r['seconds']:g} s",
                r["offered_per_s"],
                r.get("accepted_per_s"),
                r.get("messages_in_db"),
                r.get("rss_start_mb"),
                r.get("rss_early_mb"),
                r.get("rss_late_mb"),
                r.get("rss_max_mb"),
            ]
        ],
    )
    samples = r.get("samples") or []
    step = max(1, len(samples) // 12)
    series = ", ".join(f"{t:g} s: {mb:g}" for t, mb in samples[::step])
    out = table + f"\n\nRSS samples (MB): {series}"
    by_process = r.get("by_process") or {}
    if by_process:
        rows = [
            [
                role,
                m["anon_early_mb"],
                m["anon_late_mb"],
                round(m["anon_late_mb"] - m["anon_early_mb"], 1),
                m["file_early_mb"],
                m["file_late_mb"],
                round(m["file_late_mb"] - m["file_early_mb"], 1),
            ]
            for role, m in by_process.items()
        ]
        heads = [
            "process",
            *(f"{kind} {part}" for kind in ("anon", "file") for part in ("early MB", "late MB", "change")),
        ]
        out += "\n\nBy process (means of the same early and late samples):\n\n" + _table(heads, rows)
    return out


def profile_section(p: dict[str, Any]) -> str:
    if p.get("error"):
        return p["error"]
    lines = [
        f"py-spy, GIL-holding samples only ({p['samples']} samples); threads: "
        + ", ".join(f"{k} {v} %" for k, v in p["threads"].items()),
        "",
        "Top self frames:",
        "",
    ]
    lines += [f"- {pct} % `{f}`" for f, pct in p["self"][:15]]
    lines += ["", "Top inclusive frames (openbloo / SQLAlchemy):", ""]
    lines += [f"- {pct} % `{f}`" for f, pct in p["inclusive"][:20]]
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    parts = [
        "# openbloo benchmark run",
        "",
        f"Command: `{results['command']}`",
        "",
        machine_section(results["machine"]),
    ]
    if results.get("accept"):
        parts += [
            "",
            "## Accepted sends, closed loop (wrk, same load shape for every stack)",
            "",
            accept_section(results["accept"]),
        ]
    if results.get("e2e"):
        parts += [
            "",
            "## Fixed offered rate (half the maximum) and end-to-end latency",
            "",
            e2e_section(results["e2e"]),
        ]
    if results.get("e2e_sustainable"):
        parts += [
            "",
            "Maximum sustainable rate with a `status` webhook taking every event: a closed-loop run bounds it (the",
            "lower of accepted sends/s and `message.delivered` webhooks received/s in the same window); fixed rates",
            "from that bound down, until one keeps up (all accepted, every webhook received, drained within 1 s).",
            "",
            sustainable_section(results["e2e_sustainable"]),
        ]
    if results.get("kill9"):
        parts += ["", "## kill -9 under load", "", kill9_section(results["kill9"])]
    for store, title in SCALE_STORES.items():
        rows = [r for r in results.get("scale") or [] if r.get("store", "sqlite") == store]
        if rows:
            parts += ["", f"## Scale ({title}): reads and a send over stored history", "", scale_section(rows)]
    if results.get("rss"):
        parts += ["", "## Resident memory over a long run", "", rss_section(results["rss"])]
    if results.get("memory"):
        parts += ["", "## Where the memory is (in-process drive, SQLite)", "", memory_section(results["memory"])]
    if results.get("profile"):
        parts += [
            "",
            "## Profile of the send path (openbloo, SQLite, accept run)",
            "",
            profile_section(results["profile"]),
        ]
    if results.get("notes"):
        parts += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]]
    return "\n".join(parts) + "\n"
