"""HeartbeatSender: beats to the leader every 2 s and self-fences after the expiry."""

from __future__ import annotations

import dataclasses

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface import implementer

from jobsched.interfaces import IRouter
from jobsched.raft.service import RaftStatus
from jobsched.worker.heartbeat import HeartbeatSender

NODE = 3
EXPIRY = 5.0


ADDRESSES = {1: "127.0.0.1:50051", NODE: "127.0.0.1:50053"}


def status(role="follower", leader_id=1, has_quorum=False):
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
    )


class FakeRaft:
    """IRaftService as far as the sender reads it: status() and add_observer()."""

    def __init__(self):
        self.current = status()
        self.observers = []

    def status(self):
        return self.current

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


class Harness:
    def __init__(self, draining=False):
        self.clock = task.Clock()
        self.raft = FakeRaft()
        self.router = FakeRouter()
        self.worker = FakeWorker()
        self.worker.clock = self.clock
        self.draining = draining
        self.sender = HeartbeatSender(
            NODE,
            self.raft,
            self.worker,
            self.router,
            lambda: self.draining,
            self.clock,
            EXPIRY,
        )
        self.sender.startService()

    def run(self, seconds, ack=True, step=0.5):
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
        self.assertLessEqual(timeout, 2.0)
        h.router.ack_all()
        h.run(10)
        self.assertEqual(len(h.router.calls), 6)  # t = 2, 4, ..., 12

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


class FencingTests(unittest.TestCase):
    def test_acknowledged_beats_never_fence(self):
        h = Harness()
        h.run(60)
        self.assertEqual(h.worker.fenced_at, [])

    def test_fenced_after_worker_expiry_without_an_acknowledged_beat(self):
        h = Harness()
        h.run(4)  # beats at 2 and 4 acknowledged: last contact at t=4
        h.run(EXPIRY, ack=False)
        self.assertEqual(h.worker.fenced_at, [])  # t = 9: exactly the expiry, not more
        h.run(1, ack=False)
        self.assertTrue(h.worker.fenced_at)
        self.assertGreater(h.worker.fenced_at[0], 9.0)
        self.assertLessEqual(h.worker.fenced_at[0], 9.5)

    def test_unanswered_beats_fence_too(self):
        h = Harness()
        h.run(10, ack=None)
        self.assertTrue(h.worker.fenced_at)
        self.assertLessEqual(h.worker.fenced_at[0], EXPIRY + 0.5)

    def test_no_leader_known_for_the_expiry_fences(self):
        h = Harness()
        h.run(2)
        h.raft.change(role="candidate", leader_id=0)
        h.run(EXPIRY + 1)
        self.assertTrue(h.worker.fenced_at)

    def test_contact_again_stops_the_fencing(self):
        h = Harness()
        h.run(8, ack=False)
        self.assertTrue(h.worker.fenced_at)
        h.run(2)
        fenced = len(h.worker.fenced_at)
        h.run(20)
        self.assertEqual(len(h.worker.fenced_at), fenced)

    def test_leader_with_quorum_never_fences(self):
        h = Harness()
        h.raft.change(role="leader", leader_id=NODE, has_quorum=True)
        h.run(60, ack=None)
        self.assertEqual(h.worker.fenced_at, [])

    def test_leader_without_quorum_fences_after_expiry(self):
        h = Harness()
        h.raft.change(role="leader", leader_id=NODE, has_quorum=True)
        h.run(10)
        h.raft.change(role="leader", leader_id=NODE, has_quorum=False)
        h.run(EXPIRY)
        self.assertEqual(h.worker.fenced_at, [])
        h.run(1)
        self.assertTrue(h.worker.fenced_at)
