"""The cyclic garbage collector's settings for a long-running openbloo process (``serve``, ``worker``).

Profiles of the send route under load put CPython's cycle collector at about 3 % of the API process's CPU
(``gc_collect_main`` and its traversals): every collection of an older generation walked the whole start-up
heap (modules, classes, SQLAlchemy's tables, FastAPI's routes), which never becomes garbage, and the event
loop waited meanwhile. Without it, closed-loop throughput rose by about 5 % and the accept p99 fell by a
third (docs/benchmarks.md, change 71).

Two settings, applied once a process has built what it keeps for its lifetime:

- ``gc.freeze()`` moves everything alive at that moment out of the collector's sight (it is never freed,
  which is what it was going to be anyway);
- a young generation of 10,000 allocations instead of 700, so that the objects of a batch of sends in
  flight (requests, futures, rows: a few hundred each) die by reference count before a collection finds
  them, instead of being promoted and walked again by the older generations.

Garbage in reference cycles is still collected, only later; memory stays bounded by the same rules (the
memory scenario of the benchmarks runs a process for 10 minutes under load). Only process entry points call
this: a test process that builds many applications must not freeze the ones it will drop.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION = 10_000


def settle_heap() -> None:
    """Collect once, freeze what is alive, and widen the young generation (see the module's docstring)."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)
