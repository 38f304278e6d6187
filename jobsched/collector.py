"""The garbage collector, tuned for a node once it is built.

A node keeps every job it knows (the replicated table), so Python's cyclic collector,
left as it comes, scans a heap that only grows: full collections of the modules and
objects made at start-up and of the whole table, 60-95 ms each on the reactor during a
drain of short jobs (docs/performance.md, "The keeper's wake-ups, job descriptors
behind one epoll, the collector"). Objects made at start-up live as long as the
process: they are collected once and then frozen (never scanned again), and the
youngest generation is collected every YOUNG_THRESHOLD allocations instead of Python's
700, so that fewer short-lived objects (protobuf messages, Deferreds, copies of jobs)
are still alive when it runs.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle_after_start_up() -> None:
    """Collect once, freeze what is left, and collect the young less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
