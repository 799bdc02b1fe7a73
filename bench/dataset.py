"""Stored-history databases for the scale scenario: N messages written with bulk inserts, not through the API.

The schema comes from ``openbloo migrate``; the organization, key and simulator number from the same CLI
the operator uses. Then contacts, chats, conversations and messages are inserted in large transactions
(``executemany``) and the counters the reads use (per organization, chat, conversation and number) are set to match,
so the database is what openbloo itself would have written for that history: every message is a
delivered outbound message or a received inbound one (no pending jobs). Event and webhook history is
not generated: no read endpoint of the scenario touches it.

Shape: ``max(10, N // 100)`` 1:1 chats on one sender number; one "hot" chat holds 10 % of the messages
(its last page is the scenario's deep page), the rest are spread evenly; 1 message in 5 is inbound.
Generated files are cached by size (``--cache``), since 1 M messages take a minute or two to write.

On PostgreSQL the same history is used: a fresh database is migrated by ``openbloo migrate`` and every row
of the cached SQLite file is copied into it (``copy_to_postgres``), so both stores answer over one history.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.harness import Deployment, log
from openbloo.ids import new_id

HOT_SHARE = 0.10
CHUNK = 50_000


def shape(n_messages: int) -> dict[str, int]:
    chats = max(10, n_messages // 100)
    hot = int(n_messages * HOT_SHARE)
    return {"messages": n_messages, "chats": chats, "hot_chat_messages": hot}


def cached_sqlite(cache_dir: Path, n_messages: int) -> tuple[Path, dict[str, Any]]:
    """The cached database with ``n_messages`` messages (generated on first use) and its description."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    db = cache_dir / f"scale-{n_messages}.db"
    meta_path = db.with_suffix(".json")
    if db.exists() and meta_path.exists():
        return db, json.loads(meta_path.read_text())
    tmp_dir = cache_dir / f"gen-{n_messages}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    tmp_db = tmp_dir / "scale.db"
    started = time.monotonic()
    dep = Deployment(f"sqlite:///{tmp_db}", tmp_dir)
    api_key = dep.provision()
    meta = generate_sqlite(tmp_db, n_messages)
    meta["api_key"] = api_key
    meta["generate_s"] = round(time.monotonic() - started, 1)
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(tmp_db) + suffix)
        if src.exists():
            shutil.move(str(src), str(db) + suffix)
    meta_path.write_text(json.dumps(meta))
    shutil.rmtree(tmp_dir, ignore_errors=True)
    log(f"generated {n_messages} messages in {meta['generate_s']} s -> {db}")
    return db, meta


def generate_sqlite(path: Path, n_messages: int) -> dict[str, Any]:
    s = shape(n_messages)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # generation only: the file is checkpointed and closed at the end
    org_id, api_key_id = conn.execute("SELECT organization_id, id FROM api_keys LIMIT 1").fetchone()
    (number_id,) = conn.execute("SELECT id FROM numbers WHERE organization_id = ?", (org_id,)).fetchone()
    n_chats = s["chats"]
    base_t = int(time.time() * 1000) - n_messages * 10 - 86_400_000
    handles = [f"+1555800{i:04d}" if i < 10_000 else f"+155590{i:05d}" for i in range(n_chats)]
    contact_ids = [new_id("ct_") for _ in range(n_chats)]
    chat_ids = [new_id("chat_") for _ in range(n_chats)]
    conv_ids = [new_id("conv_") for _ in range(n_chats)]

    # Which chat each message belongs to: the hot chat (index 0) every 10th message, the rest round-robin.
    hot_every = round(1 / HOT_SHARE)
    counters = [[0, 0, 0, None, None, None, None, None] for _ in range(n_chats)]  # msgs, in, out, first, last ...
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO contacts (id, organization_id, identifier, type, name, created_at)"
        " VALUES (?, ?, ?, 'phone', NULL, ?)",
        [(contact_ids[i], org_id, handles[i], base_t) for i in range(n_chats)],
    )
    conn.executemany(
        "INSERT INTO chats (id, organization_id, chat_key, type, contact_id, group_id, last_number_id, message_count,"
        " inbound_count, outbound_count, created_at) VALUES (?, ?, ?, 'phone', ?, NULL, ?, 0, 0, 0, ?)",
        [(chat_ids[i], org_id, handles[i], contact_ids[i], number_id, base_t) for i in range(n_chats)],
    )
    conn.executemany(
        "INSERT INTO conversations (id, organization_id, chat_id, number_id, inbound_count, created_at)"
        " VALUES (?, ?, ?, ?, 0, ?)",
        [(conv_ids[i], org_id, chat_ids[i], number_id, base_t) for i in range(n_chats)],
    )
    conn.execute("COMMIT")

    insert = (
        "INSERT INTO messages (id, organization_id, chat_id, conversation_id, number_id, api_key_id, group_id,"
        " direction, status, protocol, text, options, sender, time_sent, time_delivered, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, 'imessage', ?, ?, ?, ?, ?, ?)"
    )
    rr = 1
    rows: list[tuple[Any, ...]] = []
    conn.execute("BEGIN")
    for k in range(n_messages):
        if k % hot_every == 0 or n_chats == 1:
            ci = 0
        else:
            ci = rr
            rr = rr + 1 if rr + 1 < n_chats else 1
        t = base_t + k * 10
        inbound = k % 5 == 4
        mid = new_id("msg_")
        text = f"history message {k}"
        # api key, direction, status, options, sender, time delivered: what differs between the two kinds
        kind = (
            (None, "inbound", "received", None, handles[ci], None)
            if inbound
            else (api_key_id, "outbound", "delivered", '{"mode":"text"}', None, t + 5)
        )
        key_id, direction, status, options, sender, delivered = kind
        row = (mid, org_id, chat_ids[ci], conv_ids[ci], number_id, key_id, direction, status, text, options, sender)
        rows.append((*row, t, delivered, t))
        c = counters[ci]
        c[0] += 1
        c[1 if inbound else 2] += 1
        c[3] = t if c[3] is None else c[3]
        c[4] = t
        c[5] = mid
        c[6] = text
        c[7] = "inbound" if inbound else "outbound"
        if len(rows) >= CHUNK:
            conn.executemany(insert, rows)
            rows.clear()
    if rows:
        conn.executemany(insert, rows)
    conn.execute("COMMIT")

    conn.execute("BEGIN")
    conn.executemany(
        "UPDATE chats SET message_count = ?, inbound_count = ?, outbound_count = ?, first_message_time = ?,"
        " last_message_time = ?, last_message_id = ?, last_message_text = ?, last_message_direction = ? WHERE id = ?",
        [(*c, chat_ids[i]) for i, c in enumerate(counters)],
    )
    conn.executemany(
        "UPDATE conversations SET inbound_count = ? WHERE id = ?",
        [(c[1], conv_ids[i]) for i, c in enumerate(counters)],
    )
    conn.execute("UPDATE organizations SET chat_count = ? WHERE id = ?", (n_chats, org_id))
    total_in = sum(c[1] for c in counters)
    total_out = sum(c[2] for c in counters)
    conn.execute(
        "UPDATE numbers SET inbound_count = ?, outbound_count = ?, last_used_at = ?, last_message_sent = ?"
        " WHERE id = ?",
        (total_in, total_out, base_t + n_messages * 10, base_t + n_messages * 10, number_id),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {**s, "hot_chat": handles[0], "hot_chat_messages": counters[0][0], "some_chat": handles[n_chats // 2]}


def copy_to_postgres(sqlite_db: Path, pg_url: str) -> dict[str, int]:
    """Every row of a generated SQLite database into a migrated, empty PostgreSQL database; rows per table.

    Table by table in foreign-key order with ``COPY``; each table's own sequence is then moved past the copied
    keys (the next send's message must not collide with history), and the copy is vacuumed and analyzed, as
    autovacuum does on a live server once a table has taken enough inserts: the statistics plan reads for the
    history they run over, and the visibility map lets a deep page skip its offset in the index alone (an
    index-only scan). Without it, a page at offset 50,000 of the biggest chat fetched every skipped row from
    the table: 175 ms against 6 ms.
    """
    import psycopg

    from openbloo.db.models import metadata

    counts: dict[str, int] = {}
    src = sqlite3.connect(f"file:{sqlite_db}?mode=ro", uri=True)
    try:
        with psycopg.connect(pg_url) as dst:
            for table in metadata.sorted_tables:
                names = ", ".join(f'"{c.name}"' for c in table.columns)
                n = 0
                with dst.cursor().copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
                    for row in src.execute(f'SELECT {names} FROM "{table.name}"'):
                        copy.write_row(row)
                        n += 1
                counts[table.name] = n
                for col in table.primary_key.columns:
                    if col.autoincrement is True:
                        dst.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{col.name}'),"
                            f' COALESCE(max("{col.name}"), 0) + 1, false) FROM "{table.name}"'
                        )
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    finally:
        src.close()
    return counts
