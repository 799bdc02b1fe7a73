"""Where a process's memory is: read by the process itself, for the in-process memory run (``bench.inprocess``).

A resident-set curve says that memory grew, not why. Beside it, one sample holds:

- the allocator's view (glibc ``mallinfo2``): bytes handed out and still in use (``malloc_used``), bytes freed
  but kept by the allocator in its heaps (``malloc_free``). Growth of the first is memory something holds;
  growth of the second with the first flat is fragmentation;
- Python's view: live allocated blocks and objects tracked by the garbage collector (a per-message leak
  shows here as a count that rises with the sends);
- the fill of every bounded cache of the send path (``functools.lru_cache``): they grow until full, by design.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any


class _Mallinfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (malloc.h, glibc >= 2.33): every field a size_t.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _mallinfo2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None  # not glibc, or older than 2.33: the sample goes without the allocator's view
    fn.restype = _Mallinfo2
    return fn


_MALLINFO2 = _mallinfo2()


def _caches() -> dict[str, Any]:
    from openbloo import addressing, app

    return {
        "chat_id_decoded": app._chat_id_of,
        "chat_id_parsed": addressing._parse_chat_id_cached,
        "handle_normalized": addressing._normalize_handle_cached,
        "emergency_digits": addressing._is_emergency_digits,
    }


RESIDENT_FIELDS = ("RssAnon", "RssFile", "RssShmem")  # their sum is the resident set (VmRSS)


def status_kb(pid: int | str = "self", fields: tuple[str, ...] = RESIDENT_FIELDS) -> dict[str, int]:
    """The named kB fields of ``/proc/PID/status``; raises OSError when the process is gone."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in fields:
            found[name] = int(rest.split()[0])
    return found


def _pymalloc() -> dict[str, float]:
    """Python's own small-object allocator, whose arenas are mapped outside malloc: live and free bytes in them.

    ``sys._debugmallocstats`` is the only interface CPython has to these figures, and it writes to the C-level
    standard error: read through a file put in its place for the call.
    """
    saved = os.dup(2)
    with tempfile.TemporaryFile() as out:
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    lines = re.finditer(r"^# ([^=\n]+?)\s*=\s*([\d,]+)$", text, re.M)
    figures = {m[1].strip(): int(m[2].replace(",", "")) for m in lines}
    arenas = re.search(r"^(\d+) arenas \* (\d+) bytes/arena", text, re.M)
    found = {
        "pymalloc_used_mb": figures.get("bytes in allocated blocks", 0) / 2**20,
        "pymalloc_free_mb": figures.get("bytes in available blocks", 0) / 2**20,
    }
    if arenas:
        found["pymalloc_arenas_mb"] = int(arenas[1]) * int(arenas[2]) / 2**20
    return {k: round(v, 2) for k, v in found.items()}


def sample() -> dict[str, Any]:
    """One reading of this process's memory, in MB where it is a size."""
    caches = _caches()  # imported before the resident set is read
    status = {name: round(kb / 1024, 2) for name, kb in status_kb(fields=("VmRSS", *RESIDENT_FIELDS)).items()}
    facts: dict[str, Any] = {
        "rss_mb": status.get("VmRSS"),
        "rss_anon_mb": status.get("RssAnon"),
        "rss_file_mb": status.get("RssFile"),
        "py_blocks": sys.getallocatedblocks(),
        "gc_objects": len(gc.get_objects()),
        "caches": {name: fn.cache_info().currsize for name, fn in caches.items()},
    }
    if _MALLINFO2 is not None:
        info = _MALLINFO2()
        facts["malloc_used_mb"] = round((info.uordblks + info.hblkhd) / 2**20, 2)
        facts["malloc_free_mb"] = round(info.fordblks / 2**20, 2)
    facts.update(_pymalloc())
    return facts


def cache_limits() -> dict[str, int | None]:
    return {name: fn.cache_info().maxsize for name, fn in _caches().items()}


def summarize(samples: list[dict[str, Any]], window_s: float) -> list[dict[str, Any]]:
    """The samples' means over consecutive windows of ``window_s`` seconds, with the change from the window before.

    Means of windows, not single samples, so one sample taken mid-batch does not read as growth.
    """
    keys = (
        "rss_mb",
        "rss_anon_mb",
        "malloc_used_mb",
        "malloc_free_mb",
        "pymalloc_arenas_mb",
        "pymalloc_used_mb",
        "pymalloc_free_mb",
        "py_blocks",
        "gc_objects",
    )
    windows: dict[int, list[dict[str, Any]]] = {}
    for s in samples:
        windows.setdefault(int(s["t"] // window_s), []).append(s)
    rows: list[dict[str, Any]] = []
    for index in sorted(windows):
        group = windows[index]
        row: dict[str, Any] = {"from_s": index * window_s, "samples": len(group), "sends": group[-1]["sends"]}
        for key in keys:
            values = [s[key] for s in group if s.get(key) is not None]
            if values:
                mean = sum(values) / len(values)
                row[key] = round(mean) if key in ("py_blocks", "gc_objects") else round(mean, 2)
                if rows and key in rows[-1]:
                    row[f"{key}_change"] = round(row[key] - rows[-1][key], 2)
        row["caches"] = group[-1]["caches"]
        rows.append(row)
    return rows


def late_growth(windows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What grew over the run's later part: from the first window in which no cache grew any more, or, if the
    caches were still filling then, from the middle window, to the last window.

    The caches are bounded and fill as new chats are sent to; memory that grows once they stop filling is
    something else (kept per message, or the allocator's fragmentation): the figure the memory run is for.
    ``cache_entries`` is what the caches gained over the same span (0 when they were full). None for a run
    of fewer than three windows.
    """
    if len(windows) < 3:
        return None
    final = windows[-1]["caches"]
    full = next(i for i, w in enumerate(windows) if w["caches"] == final)
    start = min(full, len(windows) // 2)
    first, last = windows[start], windows[-1]
    grown: dict[str, Any] = {
        "from_s": first["from_s"],
        "to_s": last["from_s"],
        "sends": last["sends"] - first["sends"],
        "caches_full": start == full,
        "cache_entries": sum(final.values()) - sum(first["caches"].values()),
    }
    for key in ("rss_mb", "malloc_used_mb", "pymalloc_used_mb", "py_blocks", "gc_objects"):
        if key in first and key in last:
            grown[key] = round(last[key] - first[key], 2)
    return grown
