"""Small, dependency-free statistics for the harness: percentiles and summaries of latency samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0..100) of already sorted values, by the nearest-rank method.

    Nearest rank: the smallest value such that at least ``p`` % of the samples are less than or equal to
    it. ``p = 0`` gives the minimum and ``p = 100`` the maximum; an empty input gives None.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, not {p}")
    rank = max(1, math.ceil(p / 100.0 * n))
    return sorted_values[rank - 1]


def summarize(values: Iterable[float], *, digits: int = 3) -> dict[str, float | int | None]:
    """count, p50, p95, p99 and max of ``values`` (same unit in, same unit out)."""
    ordered = sorted(values)
    out: dict[str, float | int | None] = {"count": len(ordered)}
    for p in (50, 95, 99):
        v = percentile(ordered, p)
        out[f"p{p}"] = None if v is None else round(v, digits)
    out["max"] = round(ordered[-1], digits) if ordered else None
    return out


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    """``a / b`` rounded, or None when either side is missing or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def median(values: Sequence[float]) -> float | None:
    """The median (the mean of the middle two for an even count), or None for no values."""
    return statistics.median(values) if values else None
