"""Ids: prefixed alphanumerics; the ordered ones sort by the time they were minted."""

from __future__ import annotations

import re
import time
from collections import Counter

from openbloo.ids import ORDERED_RANDOM_CHARS, new_id

ALNUM = re.compile(r"[A-Za-z0-9]+")


def test_random_ids_are_prefixed_alphanumerics_of_the_asked_length() -> None:
    ids = [new_id("key_", 32) for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for i in ids:
        assert i.startswith("key_") and len(i) == 36 and ALNUM.fullmatch(i[4:])
    # Every base62 character turns up, none much more than another: no byte-to-character bias.
    counts = Counter("".join(i[4:] for i in ids))
    assert len(counts) == 62
    assert max(counts.values()) < 2 * min(counts.values())


def test_ordered_ids_sort_by_their_time_and_keep_random_tails() -> None:
    earlier = [new_id("msg_", ordered=True) for _ in range(50)]
    time.sleep(0.003)
    later = [new_id("msg_", ordered=True) for _ in range(50)]
    assert max(earlier) < min(later)  # bytewise, as database indexes compare them
    for i in earlier + later:
        assert i.startswith("msg_") and len(i) == 24 and ALNUM.fullmatch(i[4:])
    tails = {i[-ORDERED_RANDOM_CHARS:] for i in earlier + later}
    assert len(tails) == 100
