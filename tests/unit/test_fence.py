"""Fence (the node's side): the lease in the reactor's time, mirrored to the keeper in
CLOCK_MONOTONIC with the grace; run registration; lease-lost listeners."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobsched.interfaces import IFence
from jobsched.worker.fence import KEEPER_GRACE_SECONDS, Fence, Unfenced


class FakeKeeper:
    """The keeper process as the fence uses it: the lines it was sent."""

    def __init__(self):
        self.lines = []

    def start(self, state):
        self.lines += state()

    def send(self, line):
        self.lines.append(line)

    def stop(self):
        return defer.succeed(None)


@implementer(IFence)
class RecordingFence:
    """A fence that records the runs executors register, in order, with `events`."""

    def __init__(self, events):
        self.events = events
        self.tokens = iter(range(1, 1000))

    def extend_lease(self, until):
        pass

    def lease_expired(self):
        return False

    def run_started(self, kind, target, label):
        token = next(self.tokens)
        self.events.append(("started", token, kind, target, label))
        return token

    def run_ended(self, token):
        self.events.append(("ended", token))


OFFSET = 500.0  # CLOCK_MONOTONIC reads the reactor's time plus this


class Harness:
    def __init__(self):
        self.clock = task.Clock()
        self.keeper = FakeKeeper()
        self.fence = Fence(self.clock, self.keeper, monotonic=lambda: self.clock.seconds() + OFFSET)
        self.lost = []
        self.fence.add_lost_listener(lambda: self.lost.append(self.clock.seconds()))


class FenceTests(unittest.TestCase):
    def test_both_provide_ifence(self):
        self.assertTrue(verifyObject(IFence, Harness().fence))
        self.assertTrue(verifyObject(IFence, Unfenced()))

    def test_no_lease_until_one_is_given(self):
        h = Harness()
        self.assertTrue(h.fence.lease_expired())
        h.fence.extend_lease(5.0)
        self.assertFalse(h.fence.lease_expired())
        h.clock.advance(5.0)
        self.assertTrue(h.fence.lease_expired())

    def test_the_keeper_gets_the_deadline_in_its_clock_plus_the_grace(self):
        h = Harness()
        h.clock.advance(3.0)
        h.fence.extend_lease(8.0)
        self.assertEqual(h.keeper.lines, [f"lease {OFFSET + 8.0 + KEEPER_GRACE_SECONDS:.6f}"])

    def test_the_lease_never_shortens_and_only_news_is_sent(self):
        h = Harness()
        h.fence.extend_lease(8.0)
        h.fence.extend_lease(7.0)
        h.fence.extend_lease(8.0)
        self.assertEqual(len(h.keeper.lines), 1)
        h.clock.advance(7.5)
        self.assertFalse(h.fence.lease_expired())

    def test_small_extensions_reach_the_keeper_in_steps_that_keep_it_second(self):
        """A leader extends its lease at every commit; the keeper hears of it once it
        moved LEASE_LINE_STEP_SECONDS, and its deadline still comes after the node's own."""
        h = Harness()
        h.fence.extend_lease(5.0)
        for step in range(1, 100):
            h.fence.extend_lease(5.0 + step / 1000)
        self.assertEqual(len(h.keeper.lines), 2)
        keeper_deadline = float(h.keeper.lines[-1].split()[1])
        self.assertGreater(keeper_deadline - OFFSET, 5.099)  # the node fences itself first
        self.assertLess(keeper_deadline - OFFSET, 5.099 + KEEPER_GRACE_SECONDS)
        h.clock.advance(5.09)
        self.assertFalse(h.fence.lease_expired())  # the node's own lease is the latest

    def test_runs_are_registered_and_unregistered_by_token(self):
        h = Harness()
        first = h.fence.run_started("pgid", "4242", "job-a")
        second = h.fence.run_started("container", "jobsched-b", "job-b")
        self.assertNotEqual(first, second)
        h.fence.run_ended(first)
        h.fence.run_ended(first)  # once only
        self.assertEqual(
            h.keeper.lines,
            [
                f"run {first} pgid 4242 job-a",
                f"run {second} container jobsched-b job-b",
                f"end {first}",
            ],
        )

    def test_a_run_ending_after_the_lease_ran_out_tells_the_listeners_first(self):
        h = Harness()
        h.fence.extend_lease(5.0)
        inside = h.fence.run_started("pgid", "4242", "job-a")
        late = h.fence.run_started("pgid", "4343", "job-b")
        h.fence.run_ended(inside)
        self.assertEqual(h.lost, [])
        h.clock.advance(6.0)
        h.fence.run_ended(late)
        self.assertEqual(h.lost, [6.0])

    def test_a_new_keeper_is_brought_up_to_date(self):
        h = Harness()
        h.fence.extend_lease(5.0)
        kept = h.fence.run_started("pgid", "4242", "job-a")
        ended = h.fence.run_started("pgid", "4343", "job-b")
        h.fence.run_ended(ended)
        h.clock.advance(1.0)
        h.keeper.lines.clear()
        h.fence.startService()  # the keeper (re)starts and asks for the state
        self.assertEqual(
            h.keeper.lines,
            [f"lease {OFFSET + 5.0 + KEEPER_GRACE_SECONDS:.6f}", f"run {kept} pgid 4242 job-a"],
        )

    def test_a_keeper_started_before_any_lease_gets_none(self):
        h = Harness()
        h.fence.startService()
        self.assertEqual(h.keeper.lines, [])
