"""HeartbeatSender: beats to the leader every 2 s, keeps the worker's lease by the rules
of docs/reliability.md ("Fencing"), and self-fences when the lease runs out."""

from __future__ import annotations

import dataclasses

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface import implementer

from jobsched.interfaces import IRouter
from jobsched.raft.service import RaftStatus
from jobsched.worker.fence import KEEPER_GRACE_SECONDS, Fence
from jobsched.worker.heartbeat import HeartbeatSender
from tests.unit.test_fence import FakeKeeper

NODE = 3
EXPIRY = 5.0


ADDRESSES = {1: "127.0.0.1:50051", NODE: "127.0.0.1:50053"}


def status(role="follower", leader_id=1, has_quorum=False, quorum_confirmed_at=None):
    address = ADDRESSES.get(leader_id)
    return RaftStatus(
        node_id=NODE,
        role=role,
        current_term=4,
        leader_id=leader_id,
        leader_address=address,
        commit_index=10,
        last_applied=10,
        last_log_index=10,
        first_log_index=1,
        has_quorum=has_quorum,
        quorum_confirmed_at=quorum_confirmed_at,
    )


class FakeRaft:
    """IRaftService as far as the sender reads it: status(), is_leader() and add_observer()."""

    def __init__(self):
        self.current = status()
        self.observers = []

    def status(self):
        return self.current

    def is_leader(self):
        return self.current.role == "leader"

    def add_observer(self, observer):
        self.observers.append(observer)

    def change(self, **changes):
        """A role or leader change, announced to the observers."""
        if "leader_id" in changes:
            changes["leader_address"] = ADDRESSES.get(changes["leader_id"])
        self.current = dataclasses.replace(self.current, **changes)
        for observer in self.observers:
            observer("role")


@implementer(IRouter)
class FakeRouter:
    """The router as the sender uses it: `send_heartbeat` records each beat; the test
    answers each Deferred."""

    def __init__(self):
        self.calls = []

    def send_heartbeat(self, request, timeout):
        d = defer.Deferred()
        self.calls.append((request, timeout, d))
        return d

    def ack_all(self):
        for *_, d in self.calls:
            if not d.called:
                d.callback(object())

    def fail_all(self):
        for *_, d in self.calls:
            if not d.called:
                d.errback(RuntimeError("leader unreachable"))

    def submit(self, request):
        raise AssertionError("the sender only sends heartbeats")

    def cancel(self, job_id):
        raise AssertionError("the sender only sends heartbeats")

    def cluster_status(self):
        raise AssertionError("the sender only sends heartbeats")

    def raft_log(self, start_index, limit):
        raise AssertionError("the sender only sends heartbeats")

    def deliver_results(self, updates):
        raise AssertionError("the sender only sends heartbeats")


class FakeWorker:
    incarnation = 424242

    def __init__(self):
        self.fenced_at = []
        self.clock = None

    def running_job_ids(self):
        return ["job-a", "job-b"]

    def free_slots(self):
        return 2

    def fence(self):
        self.fenced_at.append(self.clock.seconds())

    def fenced_after(self, t):
        """The fencings after `t` (before the first answered beat, a worker has no lease
        and fences, with nothing to kill yet)."""
        return [at for at in self.fenced_at if at > t]


MONOTONIC_OFFSET = 1000.0  # the keeper's clock reads the reactor's plus this


class Harness:
    def __init__(self, draining=False, expiry=EXPIRY):
        self.clock = task.Clock()
        self.raft = FakeRaft()
        self.router = FakeRouter()
        self.worker = FakeWorker()
        self.worker.clock = self.clock
        self.keeper = FakeKeeper()
        self.fence = Fence(
            self.clock, self.keeper, monotonic=lambda: self.clock.seconds() + MONOTONIC_OFFSET
        )
        self.draining = draining
        self.sender = HeartbeatSender(
            NODE,
            self.raft,
            self.worker,
            self.fence,
            self.router,
            lambda: self.draining,
            self.clock,
            expiry,
        )
        self.sender.startService()

    def lease_until(self):
        """Until when the keeper lets runs live, in the reactor's seconds (less the grace)."""
        leases = [line for line in self.keeper.lines if line.startswith("lease ")]
        if not leases:
            return None
        return float(leases[-1].split()[1]) - MONOTONIC_OFFSET - KEEPER_GRACE_SECONDS

    def run(self, seconds, ack=True, step=0.125):
        """Advance `seconds`, answering every beat at once (or failing it)."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            if ack:
                self.router.ack_all()
            elif ack is False:
                self.router.fail_all()


class BeatTests(unittest.TestCase):
    def test_beats_every_two_seconds_with_the_workers_state(self):
        h = Harness(draining=True)
        h.clock.advance(1.9)
        self.assertEqual(h.router.calls, [])
        h.clock.advance(0.1)
        [(request, timeout, _)] = h.router.calls
        self.assertEqual(request.node_id, NODE)
        self.assertEqual(list(request.running_job_ids), ["job-a", "job-b"])
        self.assertEqual(request.free_slots, 2)
        self.assertIs(request.draining, True)
        self.assertEqual(request.incarnation, 424242)
        self.assertEqual(request.applied_index, 10)  # what the node had applied
        self.assertEqual(request.entry_forms, 2)  # the entry forms this version applies
        self.assertLessEqual(timeout, 2.0)
        h.router.ack_all()
        h.run(10)
        self.assertEqual(len(h.router.calls), 6)  # t = 2, 4, ..., 12

    def test_a_short_expiry_beats_more_often(self):
        h = Harness(expiry=2.0)
        h.run(4)
        self.assertEqual(len(h.router.calls), 5)  # every 0.8 s: two or three per expiry
        self.assertLessEqual(h.router.calls[0][1], 0.8)

    def test_no_beat_while_leader(self):
        h = Harness()
        h.raft.change(role="leader", leader_id=NODE, has_quorum=True)
        h.run(10)
        self.assertEqual(h.router.calls, [])

    def test_no_beat_while_no_leader_is_known(self):
        h = Harness()
        h.raft.change(role="candidate", leader_id=0)
        h.run(10)
        self.assertEqual(h.router.calls, [])

    def test_a_new_leader_hears_at_once(self):
        h = Harness()
        h.raft.change(role="candidate", leader_id=0)
        h.clock.advance(1)
        h.raft.change(role="follower", leader_id=1)
        self.assertEqual(len(h.router.calls), 1)

    def test_one_beat_in_flight_at_a_time(self):
        h = Harness()
        h.run(10, ack=None)  # the leader never answers
        self.assertEqual(len(h.router.calls), 1)
        h.router.ack_all()
        h.clock.advance(2)
        self.assertEqual(len(h.router.calls), 2)

    def test_a_failed_beat_is_sent_again_next_time(self):
        h = Harness()
        h.run(2, ack=False)
        h.run(2, ack=False)
        self.assertEqual(len(h.router.calls), 2)

    def test_stopped_sender_neither_beats_nor_fences(self):
        h = Harness()
        h.sender.stopService()
        h.run(30, ack=None)
        self.assertEqual(h.router.calls, [])
        self.assertEqual(h.worker.fenced_at, [])
        self.assertEqual(h.clock.getDelayedCalls(), [])


class LeaseTests(unittest.TestCase):
    """A follower's lease runs to the send time of its latest acknowledged beat plus the
    expiry; a leader's to its latest quorum confirmation plus the expiry. The worker
    fences itself once the lease is out; the keeper hears every extension."""

    def test_acknowledged_beats_never_fence(self):
        h = Harness()
        h.run(60)
        self.assertEqual(h.worker.fenced_after(2.0), [])

    def test_the_lease_runs_from_the_send_time_not_the_answer(self):
        h = Harness()
        h.clock.advance(2.0)  # beat sent at t = 2 ...
        h.clock.advance(1.5)
        h.router.ack_all()  # ... answered at t = 3.5
        self.assertAlmostEqual(h.lease_until(), 2.0 + EXPIRY)
        self.assertIn(
            f"lease {MONOTONIC_OFFSET + 2.0 + EXPIRY + KEEPER_GRACE_SECONDS:.6f}", h.keeper.lines
        )
        h.run(3.375, ack=False)  # t = 6.875: still inside the lease
        self.assertEqual(h.worker.fenced_after(3.5), [])
        h.run(0.25, ack=False)
        self.assertTrue(h.worker.fenced_after(3.5))
        self.assertAlmostEqual(h.worker.fenced_after(3.5)[0], 7.0, delta=0.11)

    def test_an_answer_that_comes_after_the_lease_renews_nothing(self):
        """This node was paused (or the answer slow) past the expiry: hearing back now
        tells nothing about the time in between."""
        h = Harness()
        h.clock.advance(2.0)
        h.clock.advance(EXPIRY + 3)  # paused: nothing ran
        h.router.ack_all()
        self.assertTrue(h.fence.lease_expired())
        h.clock.advance(0.1)
        self.assertTrue(h.worker.fenced_after(2.0 + EXPIRY))

    def test_no_answer_no_lease(self):
        h = Harness()
        h.run(10, ack=None)
        self.assertIsNone(h.lease_until())
        self.assertTrue(h.worker.fenced_at)

    def test_no_leader_known_for_the_expiry_fences(self):
        h = Harness()
        h.run(2)
        h.raft.change(role="candidate", leader_id=0)
        h.run(EXPIRY - 0.125)
        self.assertEqual(h.worker.fenced_after(2.0), [])
        h.run(0.25)
        self.assertTrue(h.worker.fenced_after(2.0))

    def test_contact_again_stops_the_fencing(self):
        h = Harness()
        h.run(8, ack=False)
        self.assertTrue(h.worker.fenced_at)
        h.run(2)
        fenced = len(h.worker.fenced_at)
        h.run(20)
        self.assertEqual(len(h.worker.fenced_at), fenced)

    def test_the_lease_never_shortens(self):
        h = Harness()
        h.run(2)
        sent = len(h.keeper.lines)
        h.fence.extend_lease(1.0)
        self.assertEqual(len(h.keeper.lines), sent)
        self.assertAlmostEqual(h.lease_until(), 2.0 + EXPIRY)

    def test_leader_renews_from_its_quorum_confirmations(self):
        h = Harness()
        for _ in range(100):  # 10 s of a healthy leader: quorum confirmed 50 ms ago
            confirmed = h.clock.seconds() - 0.05
            h.raft.current = status("leader", NODE, True, quorum_confirmed_at=confirmed)
            h.clock.advance(0.1)
        self.assertEqual(h.worker.fenced_after(0.1), [])
        self.assertAlmostEqual(h.lease_until(), confirmed + EXPIRY)
        self.assertEqual(h.router.calls, [])

    def test_leader_without_new_confirmations_fences_after_expiry(self):
        h = Harness()
        h.raft.change(role="leader", leader_id=NODE, has_quorum=True, quorum_confirmed_at=10.0)
        h.run(14.875)
        self.assertAlmostEqual(h.lease_until(), 10.0 + EXPIRY)
        self.assertEqual(h.worker.fenced_after(0.1), [])
        h.run(0.25)
        self.assertTrue(h.worker.fenced_after(0.1))
        self.assertAlmostEqual(h.worker.fenced_after(0.1)[0], 15.0, delta=0.11)

    def test_applied_entries_renew_the_lease_before_a_job_can_start(self):
        """An AssignJob just applied may start a job in the next turn: the lease must
        not wait for the next periodic check."""
        h = Harness()
        h.raft.current = status("leader", NODE, True, quorum_confirmed_at=0.0)
        for observer in h.raft.observers:
            observer("applied")
        self.assertAlmostEqual(h.lease_until(), EXPIRY)

    def test_leader_that_never_confirmed_a_quorum_has_no_lease(self):
        h = Harness()
        h.raft.change(role="leader", leader_id=NODE, has_quorum=True, quorum_confirmed_at=None)
        h.run(1)
        self.assertIsNone(h.lease_until())
