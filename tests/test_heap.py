"""The collector's settings of a long-running process (``openbloo.heap``), checked in a process of its own:
freezing the heap of the test process would keep every application the other tests drop."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import gc, json, weakref
    from openbloo.heap import settle_heap, YOUNG_GENERATION

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return a

    before = gc.get_threshold()
    kept = cycle()  # alive at start-up: frozen with the rest
    settle_heap()
    frozen = gc.get_freeze_count()
    dropped = cycle()
    gone = weakref.ref(dropped)
    del dropped
    found = gc.collect()
    print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": frozen, "young": YOUNG_GENERATION,
                      "collected": found, "dropped_alive": gone() is not None, "kept": kept.other.other is kept}))
    """
)


def test_settling_the_heap_freezes_what_is_alive_and_still_collects_cycles_made_later() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    seen = json.loads(out.stdout)
    assert seen["after"] == [seen["young"], seen["before"][1], seen["before"][2]]
    assert seen["young"] > seen["before"][0]
    assert seen["frozen"] > 1_000  # the imported modules' objects, at the least
    assert seen["kept"]
    assert seen["collected"] >= 2 and not seen["dropped_alive"]  # a cycle made after start-up is still freed
