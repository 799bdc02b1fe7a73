"""The maximum sustainable rate: the highest fixed offered rate the whole pipeline keeps up with.

A closed-loop run with a webhook subscriber gives an upper bound only. Its clients wait for each answer, so
the API batches many sends per commit, and the deliveries and webhooks it leaves behind are not waited
for. Offered on a fixed schedule, that rate fell behind: on PostgreSQL, 843/s offered left webhooks 14 s
behind and took 13 s to drain (docs/benchmarks.md, seventh round). So the bound is probed on a fixed
schedule, stepping down until a run keeps up, then one step is split in two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# A run keeps up when it accepted what was offered, every measured message reached its webhook, and what was
# left in flight when the load stopped was done within this long (the drain poll's step is half a second).
KEEP_UP_DRAIN_S = 1.0
KEEP_UP_ACCEPTED = 0.99
STEP = 0.85  # each probe offers this fraction of the last one that fell behind
MAX_PROBES = 6


def keeps_up(run: dict[str, Any], offered: float) -> bool:
    """Whether a fixed-rate run with the webhook subscriber kept up with ``offered`` sends/s."""
    drain = run.get("drain_s")
    return (
        drain is not None
        and drain <= KEEP_UP_DRAIN_S
        and run.get("accepted_per_s", 0.0) >= KEEP_UP_ACCEPTED * offered
        and run.get("messages_without_delivered_webhook", 1) == 0
        and not run.get("non2xx")
    )


def search(
    probe: Callable[[float], dict[str, Any]], upper: float, *, floor: float = 5.0
) -> tuple[float | None, list[dict[str, Any]]]:
    """Probe fixed rates from ``upper`` down by :data:`STEP` until one keeps up, then the middle of that last
    step; returns the highest rate that kept up (None if none did) and every probe, in the order run."""
    probes: list[dict[str, Any]] = []

    def run(rate: float) -> bool:
        result = probe(rate)
        kept = keeps_up(result, rate)
        probes.append({"offered_per_s": round(rate, 1), "kept_up": kept, **_summary(result)})
        return kept

    rate, fell_behind = upper, None
    for _ in range(MAX_PROBES):
        if rate < floor:
            break
        if run(rate):
            if fell_behind is not None:
                middle = (rate + fell_behind) / 2
                if run(middle):
                    return middle, probes
            return rate, probes
        fell_behind, rate = rate, rate * STEP
    return None, probes


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    hook = run.get("accept_to_webhook_ms") or {}
    return {
        "accepted_per_s": run.get("accepted_per_s"),
        "drain_s": run.get("drain_s"),
        "webhook_p99_ms": hook.get("p99"),
        "messages_without_delivered_webhook": run.get("messages_without_delivered_webhook"),
    }
