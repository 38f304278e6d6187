"""The garbage collector's tuning for a node (jobsched/collector.py)."""

from __future__ import annotations

import gc
import weakref

from twisted.trial import unittest

from jobsched import collector


class SettleTests(unittest.TestCase):
    def setUp(self) -> None:
        threshold = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *threshold)
        self.addCleanup(gc.unfreeze)

    def test_what_exists_is_frozen_and_the_young_are_collected_less_often(self) -> None:
        kept = [[] for _ in range(100)]  # objects alive now
        collector.settle_after_start_up()
        self.assertGreaterEqual(gc.get_freeze_count(), len(kept))
        self.assertEqual(gc.get_threshold()[0], collector.YOUNG_THRESHOLD)

    def test_garbage_made_before_is_collected_not_frozen(self) -> None:
        class Node:
            pass

        cycle = Node()
        cycle.itself = cycle
        gone = weakref.ref(cycle)
        del cycle
        collector.settle_after_start_up()
        self.assertIsNone(gone())
