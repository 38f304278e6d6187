"""Dispatcher on a real single-node RaftService and JobTable, driven by a Clock, and the
WorkerRegistry it keeps heartbeats in.

Node 1 leads and has its own worker (slots given per test); remote workers exist only
through the heartbeats the test hands the dispatcher.
"""

from __future__ import annotations

import itertools
import math

from twisted.internet import defer, task
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobsched import errors
from jobsched._proto import scheduler_pb2
from jobsched.dispatch import Dispatcher
from jobsched.interfaces import IDispatcher, IRaftStorage, IWorker
from jobsched.jobs import commands
from jobsched.jobs.model import JobResult, JobStatus
from jobsched.raft.storage import MemoryStorage
from jobsched.registry import Heartbeat, WorkerRegistry
from jobsched.scheduler import Assigner, WorkerView
from jobsched.worker.fence import FENCE_MARGIN_SECONDS
from tests.unit.test_cluster_api import build, cluster, elected

LEADER = 1
LOCAL_INCARNATION = 1001
EXPIRY = 5.0
LOST_AFTER = EXPIRY + FENCE_MARGIN_SECONDS  # the silence after which a worker is lost
_names = (f"job-{n:04d}" for n in itertools.count())


@implementer(IWorker)
class LocalWorker:
    """The leader's own worker as the dispatcher sees it: it runs what the table
    assigns to it."""

    incarnation = LOCAL_INCARNATION
    table = None

    def running_job_ids(self):
        return [job.job_id for job in self.table.jobs_running_on(LEADER)] if self.table else []

    def free_slots(self):
        return 0

    def fence(self):
        raise AssertionError("the dispatcher never fences its own worker")

    def wind_down(self, grace_seconds):
        return defer.succeed(None)


def dispatcher_of(node, slots=2, is_draining=lambda: False):
    """A Dispatcher wired to `node` (a tests.unit.test_cluster_api.Node) as in a node."""
    local_worker = LocalWorker()
    local_worker.table = node.table
    return Dispatcher(
        node.config.node_id,
        node.raft,
        node.table,
        Assigner(),
        local_worker,
        node.registry,
        slots,
        is_draining,
        node.clock,
        worker_expiry=EXPIRY,
    )


@implementer(IRaftStorage)
class HeldAppends(MemoryStorage):
    """Memory storage whose log appends wait, while `holding`, until `let_go()`: the
    proposals of that time stay uncommitted."""

    holding = False

    def __init__(self):
        super().__init__()
        self._held = []

    def append(self, entries):
        if not self.holding:
            return super().append(entries)
        waiting = defer.Deferred()
        self._held.append((entries, waiting))
        return waiting

    def let_go(self):
        self.holding = False
        held, self._held = self._held, []
        for entries, waiting in held:
            super().append(entries).chainDeferred(waiting)


class Leader:
    """An elected node 1: raft, table, worker registry and a started dispatcher."""

    def __init__(self, slots=2, draining=False, storage=None, clock=None, peers=()):
        self.clock = clock or task.Clock()
        node = build(self.clock, storage, worker_expiry=EXPIRY)
        if peers:  # the workers of a larger cluster (its Raft stays a cluster of one)
            node.registry = WorkerRegistry(self.clock, EXPIRY, peers)
        self.raft, self.table, self.registry = node.raft, node.table, node.registry
        self.draining = draining
        self.dispatcher = dispatcher_of(node, slots, lambda: self.draining)
        self.dispatcher.startService()  # before the election, as in a node
        elected(self.clock, self.raft)

    def propose(self, command):
        outcomes = []
        self.raft.propose(command).addBoth(outcomes.append)
        self.settle()
        if not outcomes or isinstance(outcomes[0], Failure):
            raise AssertionError(f"{command} was not committed: {outcomes}")
        return outcomes[0]

    def submit(self, count=1, max_attempts=3):
        """Submit `count` jobs (committed at once) and return their ids in order."""
        ids = []
        for _ in range(count):
            job_id = next(_names)
            self.propose(commands.submit_job(job_id, "true", 1000, max_attempts=max_attempts))
            ids.append(job_id)
        return ids

    def finish(self, job_id):
        job = self.table.get(job_id)
        done = JobResult(JobStatus.COMPLETED, 0, "", "", False, None, 2000)
        update = commands.status_update(job_id, done, job.assigned_worker, job.attempts)
        self.propose(commands.batch_update([update]))

    def beat(
        self,
        node_id,
        free_slots=4,
        running=None,
        draining=False,
        incarnation=None,
        applied=None,
        entry_forms=commands.ENTRY_FORMS,
    ):
        """A heartbeat from `node_id`; by default it reports running what the table
        assigns to it, and having applied all the leader has, as a healthy worker does."""
        if running is None:
            running = [job.job_id for job in self.table.jobs_running_on(node_id)]
        self.dispatcher.heartbeat(
            node_id,
            list(running),
            free_slots,
            draining,
            incarnation if incarnation is not None else node_id * 1000,
            applied if applied is not None else self.raft.status().last_applied,
            entry_forms,
        )

    def settle(self):
        for _ in range(10):
            self.clock.advance(0)

    def run(self, seconds, beating=(), step=0.5):
        """Let `seconds` pass; the workers in `beating` heartbeat every 2 s."""
        for n in range(1, round(seconds / step) + 1):
            self.clock.advance(step)
            if n % round(2 / step) == 0:
                for node_id in beating:
                    self.beat(node_id)
            self.settle()

    def placed(self, job_ids):
        jobs = [self.table.get(job_id) for job_id in job_ids]
        return [(j.assigned_worker if j.status is JobStatus.RUNNING else None) for j in jobs]


class PlacementTests(unittest.TestCase):
    def test_dispatcher_provides_its_interface(self):
        self.assertTrue(verifyObject(IDispatcher, Leader().dispatcher))

    def test_pending_jobs_go_to_the_leaders_own_worker_up_to_its_slots(self):
        node = Leader(slots=2)
        jobs = node.submit(3)
        node.settle()

        self.assertEqual(node.placed(jobs), [LEADER, LEADER, None])  # FIFO: the first two
        for job_id in jobs[:2]:
            job = node.table.get(job_id)
            self.assertEqual((job.worker_incarnation, job.attempts), (LOCAL_INCARNATION, 1))

        node.finish(jobs[0])
        node.settle()
        self.assertEqual(node.placed(jobs[1:]), [LEADER, LEADER])  # the freed slot is used

    def test_leaders_own_worker_needs_no_heartbeat_or_registration(self):
        node = Leader()
        node.submit(1)
        node.run(30)
        self.assertTrue(node.dispatcher.workers()[LEADER].live)
        self.assertEqual(node.table.running_counts(), {LEADER: 1})

    def test_first_heartbeat_registers_a_remote_worker_and_makes_it_eligible(self):
        node = Leader(slots=1)
        jobs = node.submit(3)
        node.settle()
        self.assertEqual(node.placed(jobs), [LEADER, None, None])
        self.assertEqual(node.table.workers(), [])

        node.beat(2, free_slots=4)
        node.settle()

        self.assertEqual(node.table.workers(), [2])
        view = node.dispatcher.workers()[2]
        self.assertEqual((view.live, view.draining, view.slots), (True, False, 4))
        self.assertEqual(node.placed(jobs), [LEADER, 2, 2])

    def test_later_heartbeats_do_not_register_again(self):
        node = Leader()
        node.beat(2)
        node.settle()
        node.run(20, beating=[2])
        entries = node.raft.log_entries(1, 1000)
        registrations = [
            entry
            for entry in entries
            if scheduler_pb2.Command.FromString(entry.command).HasField("register_worker")
        ]
        self.assertEqual(len(registrations), 1)

    def test_jobs_spread_to_the_least_loaded_worker(self):
        node = Leader(slots=4)
        node.beat(2, free_slots=4)
        node.beat(3, free_slots=4)
        node.settle()
        jobs = node.submit(6)
        node.settle()
        # FIFO onto the fewest running, ties to the lowest id: 1, 2, 3, 1, 2, 3
        self.assertEqual(node.placed(jobs), [1, 2, 3, 1, 2, 3])
        self.assertEqual(node.table.running_counts(), {1: 2, 2: 2, 3: 2})

    def test_heartbeat_incarnation_is_carried_into_the_assignment(self):
        node = Leader(slots=1)
        node.draining = True
        node.beat(2, incarnation=31337)
        node.settle()
        [first] = node.submit(1)
        node.settle()
        self.assertEqual(node.table.get(first).worker_incarnation, 31337)

        node.beat(2, incarnation=4242)  # the worker restarted: a new life
        [second] = node.submit(1)
        node.settle()
        self.assertEqual(node.table.get(second).worker_incarnation, 4242)

    def test_draining_workers_get_nothing(self):
        node = Leader(slots=2, draining=True)
        node.beat(2, draining=True)
        jobs = node.submit(2)
        node.run(6, beating=[])
        self.assertEqual(node.placed(jobs), [None, None])
        self.assertTrue(node.registry.is_draining(2))

        node.beat(3)
        node.settle()
        self.assertEqual(node.placed(jobs), [3, 3])

    def test_a_worker_past_the_expiry_gets_no_new_jobs(self):
        node = Leader(draining=True)
        node.beat(2)
        node.run(EXPIRY + 1)
        jobs = node.submit(1)
        node.settle()
        self.assertFalse(node.dispatcher.workers()[2].live)
        self.assertEqual(node.placed(jobs), [None])


class LostWorkerTests(unittest.TestCase):
    def lost_worker_setup(self, max_attempts=3):
        """Leader (its own worker draining) with two jobs running on remote worker 2."""
        node = Leader(draining=True)
        node.beat(2)
        node.settle()
        jobs = node.submit(2, max_attempts=max_attempts)
        node.settle()
        self.assertEqual(node.placed(jobs), [2, 2])
        return node, jobs

    def test_silent_worker_past_the_expiry_has_its_jobs_requeued(self):
        node, jobs = self.lost_worker_setup()
        node.run(LOST_AFTER)  # silent exactly the expiry plus the margin: not yet lost
        self.assertEqual(node.placed(jobs), [2, 2])

        node.run(1.5)
        for job_id in jobs:
            job = node.table.get(job_id)
            self.assertIs(job.status, JobStatus.PENDING)
            self.assertEqual((job.assigned_worker, job.attempts), (0, 1))

        node.beat(3, incarnation=3003)
        node.settle()
        for job_id in jobs:
            job = node.table.get(job_id)
            self.assertEqual((job.status, job.assigned_worker), (JobStatus.RUNNING, 3))
            self.assertEqual((job.attempts, job.worker_incarnation), (2, 3003))

    def test_requeued_jobs_go_to_the_leaders_own_worker_when_it_has_room(self):
        node, jobs = self.lost_worker_setup()
        node.draining = False
        node.run(LOST_AFTER + 1.5)
        self.assertEqual(node.placed(jobs), [LEADER, LEADER])
        self.assertEqual([node.table.get(j).attempts for j in jobs], [2, 2])

    def test_lost_worker_with_attempts_exhausted_fails_the_job(self):
        node, jobs = self.lost_worker_setup(max_attempts=1)
        last_heard = node.clock.seconds()
        node.run(LOST_AFTER + 1.5)
        for job_id in jobs:
            job = node.table.get(job_id)
            self.assertIs(job.status, JobStatus.FAILED)
            self.assertEqual(job.error, "worker 2 lost")
            self.assertIsNone(job.exit_code)
            self.assertGreater(job.completed_at_ms, (last_heard + LOST_AFTER) * 1000)
            self.assertLessEqual(job.completed_at_ms, node.clock.seconds() * 1000)

    def test_max_attempts_one_never_runs_the_job_twice(self):
        """The job fails `worker 2 lost` with one lost attempt and is never assigned
        again, though a live worker with free slots is waiting."""
        node, jobs = self.lost_worker_setup(max_attempts=1)
        node.run(EXPIRY + 1.5)
        node.draining = False
        node.beat(3)
        node.run(3 * EXPIRY, beating=[3])
        for job_id in jobs:
            job = node.table.get(job_id)
            self.assertEqual((job.status, job.error), (JobStatus.FAILED, "worker 2 lost"))
            self.assertEqual(job.attempts, 1)
            self.assertEqual(
                [(r.attempt, r.worker, r.outcome) for r in job.attempt_history],
                [(1, 2, "lost")],
            )
        self.assertEqual(node.table.running_counts(), {})

    def test_attempts_count_across_losses_until_they_run_out(self):
        node, jobs = self.lost_worker_setup(max_attempts=2)
        node.run(LOST_AFTER + 1.5)  # attempt 1 lost on 2: pending again
        node.beat(3)
        node.settle()
        self.assertEqual(node.placed(jobs), [3, 3])
        node.run(LOST_AFTER + 1.5)  # attempt 2 lost on 3: none left
        self.assertEqual([node.table.get(j).status for j in jobs], [JobStatus.FAILED] * 2)
        self.assertEqual([node.table.get(j).error for j in jobs], ["worker 3 lost"] * 2)

    def test_worker_heard_from_within_the_window_is_not_touched(self):
        node, jobs = self.lost_worker_setup()
        node.run(30, beating=[2])
        self.assertEqual(node.placed(jobs), [2, 2])
        self.assertEqual([node.table.get(j).attempts for j in jobs], [1, 1])

    def test_only_the_silent_worker_loses_its_jobs(self):
        node = Leader(draining=True)
        node.beat(2)
        node.beat(3)
        node.settle()
        jobs = node.submit(2)
        node.settle()
        self.assertEqual(node.placed(jobs), [2, 3])
        node.run(LOST_AFTER + 1.5, beating=[3])
        # worker 2's job was taken back and placed on 3; 3's own job kept its attempt
        self.assertEqual(node.placed(jobs), [3, 3])
        self.assertEqual([node.table.get(j).attempts for j in jobs], [2, 1])

    def test_leaders_own_worker_is_never_declared_lost(self):
        node = Leader(slots=2)
        jobs = node.submit(2)
        node.run(60)
        self.assertEqual(node.placed(jobs), [LEADER, LEADER])
        self.assertEqual([node.table.get(j).attempts for j in jobs], [1, 1])

    def test_a_job_a_live_worker_stopped_reporting_is_taken_back_after_the_expiry(self):
        """A worker that fenced its jobs while briefly apart from the leader keeps beating,
        but without them: the leader takes such a job back once it has been missing from
        the beats for longer than the worker expiry (and not before)."""
        node = Leader(slots=0)
        node.beat(2)
        node.settle()
        jobs = node.submit(2)
        node.settle()
        self.assertEqual(node.placed(jobs), [2, 2])
        kept, dropped = jobs
        for step in range(1, 9):  # 8 s of beats that list only `kept`
            node.clock.advance(1.0)
            node.beat(2, running=[kept])
            node.settle()
            if step <= EXPIRY:
                self.assertEqual(node.placed(jobs), [2, 2], f"taken back after {step} s")
        self.assertEqual(node.table.get(dropped).attempts, 2)  # taken back and placed again
        self.assertEqual(node.table.get(kept).attempts, 1)
        self.assertEqual(node.placed([kept]), [2])

    def test_a_beat_sent_before_the_worker_knew_of_a_job_does_not_make_it_missing(self):
        """Found by the chaos run: a worker's last beat went out before it applied an
        assignment, then the worker was paused. The job runs there under the lease of
        that beat, so it may be taken back only as a silent worker's, the expiry plus
        the fence margin after that beat: never as a live worker's missing job, which a
        check running a little late took back sooner."""
        node = Leader(slots=0)
        node.beat(2)
        node.settle()
        # Just before a lost-worker check (once a second since the dispatcher started).
        node.clock.advance(math.ceil(node.clock.seconds()) - node.clock.seconds() - 0.1)
        beat_at = node.clock.seconds()
        node.beat(2, running=[])
        [job_id] = node.submit(1)  # assigned after the beat left the worker
        node.settle()
        self.assertEqual(node.placed([job_id]), [2])
        requeued_at = None
        while requeued_at is None and node.clock.seconds() < beat_at + 20:
            step = 0.3 if node.clock.seconds() % 1.0 > 0.95 else 0.05  # some checks late
            node.clock.advance(step)
            node.settle()
            if node.table.get(job_id).status is JobStatus.PENDING:
                requeued_at = node.clock.seconds()
        self.assertIsNotNone(requeued_at)
        self.assertGreater(requeued_at - beat_at, LOST_AFTER)

    def test_beats_that_do_not_say_what_the_worker_applied_never_make_a_job_missing(self):
        node = Leader(slots=0)
        node.beat(2)
        node.settle()
        [job_id] = node.submit(1)
        node.settle()
        for _ in range(20):
            node.clock.advance(1.0)
            node.beat(2, running=[], applied=0)  # a worker of an earlier version
            node.settle()
        self.assertEqual(node.placed([job_id]), [2])
        self.assertEqual(node.table.get(job_id).attempts, 1)


class LeaderPauseTests(unittest.TestCase):
    """Time during which the leader itself did not run (SIGSTOP, a stalled reactor:
    its once-a-second check came late) is nobody's silence."""

    PAUSE = 30.0

    def test_a_paused_leader_does_not_count_its_pause_as_silence(self):
        node, jobs = LostWorkerTests.lost_worker_setup(self)
        node.run(3, beating=[2])
        node.clock.advance(self.PAUSE)  # stopped: no beat arrives, no timer runs
        node.settle()
        self.assertEqual(node.placed(jobs), [2, 2])
        node.run(20, beating=[2])  # the worker was healthy all along
        self.assertEqual(node.placed(jobs), [2, 2])
        self.assertEqual([node.table.get(j).attempts for j in jobs], [1, 1])

    def test_silence_outside_the_pause_still_counts(self):
        node, jobs = LostWorkerTests.lost_worker_setup(self)
        node.run(2)  # worker 2 falls silent
        node.clock.advance(self.PAUSE)
        node.settle()
        self.assertEqual(node.placed(jobs), [2, 2])
        node.run(LOST_AFTER)  # silent for 2 s before the pause and this long after it
        self.assertEqual([node.table.get(j).status for j in jobs], [JobStatus.PENDING] * 2)

    def test_a_fresh_leaders_wait_does_not_count_its_pause(self):
        node, jobs = LostWorkerTests.lost_worker_setup(self)
        node.registry.forget_all()  # as after an election: heard from nobody yet
        node.clock.advance(self.PAUSE)
        node.settle()
        node.beat(2)
        node.run(20, beating=[2])
        self.assertEqual(node.placed(jobs), [2, 2])
        self.assertEqual([node.table.get(j).attempts for j in jobs], [1, 1])

    def test_a_job_missing_from_the_beats_is_not_missing_during_the_pause(self):
        node, jobs = LostWorkerTests.lost_worker_setup(self)
        kept, dropped = jobs
        for _ in range(2):
            node.clock.advance(1.0)
            node.beat(2, running=[kept])
            node.settle()
        node.clock.advance(self.PAUSE)
        node.beat(2, running=[kept])
        node.settle()
        self.assertEqual(node.table.get(dropped).attempts, 1)
        for _ in range(round(EXPIRY) + 1):
            node.clock.advance(1.0)
            node.beat(2, running=[kept])
            node.settle()
        self.assertEqual(node.table.get(dropped).attempts, 2)
        self.assertEqual(node.table.get(kept).attempts, 1)


class FreshLeaderTests(unittest.TestCase):
    """A node elected after a restart, replaying a table a previous leader built."""

    def test_fresh_leader_waits_the_expiry_before_declaring_anyone_lost(self):
        """The previous leader put jobs on worker 2 long ago; after a restart this node
        has heard nothing from it yet, and gives it the expiry plus the fence margin from
        its election."""
        storage = MemoryStorage()
        clock = task.Clock()
        first = Leader(draining=True, storage=storage, clock=clock)
        first.beat(2)
        first.settle()
        jobs = first.submit(2)
        first.settle()
        self.assertEqual(first.placed(jobs), [2, 2])
        first.run(1)
        first.dispatcher.stopService()
        first.raft.stopService()
        clock.advance(100)  # worker 2 was last heard from 100 s ago

        second = Leader(draining=True, storage=storage, clock=clock)
        elected_at = clock.seconds()
        self.assertEqual(second.placed(jobs), [2, 2])  # the replayed table
        second.run(LOST_AFTER - 0.5)
        self.assertEqual(second.placed(jobs), [2, 2])
        second.run(2)
        self.assertEqual([second.table.get(j).status for j in jobs], [JobStatus.PENDING] * 2)
        self.assertGreater(clock.seconds() - elected_at, LOST_AFTER)

    def test_fresh_leader_keeps_a_worker_that_reaches_it_in_time(self):
        storage = MemoryStorage()
        clock = task.Clock()
        first = Leader(draining=True, storage=storage, clock=clock)
        first.beat(2)
        first.settle()
        jobs = first.submit(1)
        first.settle()
        first.dispatcher.stopService()
        first.raft.stopService()
        clock.advance(100)

        second = Leader(draining=True, storage=storage, clock=clock)
        second.run(4)
        second.beat(2)
        second.run(30, beating=[2])
        self.assertEqual(second.placed(jobs), [2])
        self.assertEqual(second.table.get(jobs[0]).attempts, 1)  # never taken back


class LeadershipTests(unittest.TestCase):
    """Only a leader takes heartbeats, and it forgets them when it stops leading."""

    def test_node_without_a_leader_refuses_heartbeats(self):
        clock = task.Clock()
        node = build(clock)
        node.raft.startService()
        self.addCleanup(node.raft.stopService)
        dispatcher = dispatcher_of(node)
        with self.assertRaises(errors.NotLeader) as caught:
            dispatcher.heartbeat(2, [], 4, False, 2000)
        self.assertIsNone(caught.exception.leader_address)
        self.assertIsNone(node.registry.latest(2))

    def test_follower_refuses_heartbeats_naming_the_leader(self):
        clock = task.Clock()
        _leader, follower = cluster(self, clock)
        dispatcher = dispatcher_of(follower)
        dispatcher.startService()
        self.addCleanup(dispatcher.stopService)
        with self.assertRaises(errors.NotLeader) as caught:
            dispatcher.heartbeat(3, ["job-a"], 4, False, 3000)
        self.assertEqual(caught.exception.leader_address, "127.0.0.1:50051")
        self.assertEqual(follower.registry.views(), {})
        self.assertEqual(follower.table.workers(), [])

    def test_a_leader_that_steps_down_forgets_every_heartbeat(self):
        clock = task.Clock()
        leader, follower = cluster(self, clock)
        dispatcher = dispatcher_of(leader)
        dispatcher.startService()
        self.addCleanup(dispatcher.stopService)
        dispatcher.heartbeat(2, [], 4, True, 2000)
        clock.pump([0.05] * 4)
        self.assertEqual(leader.table.workers(), [2])
        self.assertTrue(leader.registry.is_live(2))

        follower.raft.stopService()  # the leader loses its quorum and steps down
        clock.pump([0.05] * 20)
        self.assertFalse(leader.api.is_leader())
        self.assertIsNone(leader.registry.latest(2))
        self.assertFalse(leader.registry.is_draining(2))
        self.assertNotIn(2, dispatcher.workers())


class MixedVersionTests(unittest.TestCase):
    """While a node might not apply the batched entry forms (its heartbeats say it is
    of an older version, or it has not been heard from since this node leads), the
    leader writes only the forms every version applies."""

    def kinds_since(self, node, index):
        return [
            scheduler_pb2.Command.FromString(entry.command).WhichOneof("command_type")
            for entry in node.raft.log_entries(index + 1, 1000)
        ]

    def test_an_older_node_gets_one_assignment_per_entry(self):
        node = Leader(slots=1, peers=(2, 3))
        node.beat(3)
        node.beat(2, free_slots=2, entry_forms=0)  # a version from before entry forms
        before = node.raft.status().last_log_index
        jobs = node.submit(4)
        node.settle()
        self.assertEqual(sorted(map(str, node.placed(jobs))), ["1", "2", "2", "3"])
        kinds = self.kinds_since(node, before)
        self.assertNotIn("assign_jobs", kinds)
        self.assertEqual(kinds.count("assign_job"), 4)

    def test_an_older_node_gets_no_assignment_in_submit_or_result_entries(self):
        node = Leader(slots=1, peers=(2,))
        node.beat(2, free_slots=0, entry_forms=1)
        jobs = [commands.job_to_submit(next(_names), "true", 1000)]
        self.assertIsNone(node.dispatcher.place_new(jobs, 5000))
        first, second = node.submit(2)
        done = JobResult(JobStatus.COMPLETED, 0, "", "", False, None, 2000)
        update = commands.status_update(first, done, LEADER, node.table.get(first).attempts)
        assignments, release = node.dispatcher.results_proposed([update], 7000)
        self.assertEqual(assignments, [])
        node.raft.propose(commands.batch_update([update])).addBoth(release)
        node.settle()
        self.assertEqual(node.placed([second]), [LEADER])  # by a round of its own

    def test_a_leader_alone_writes_the_batched_forms_at_once(self):
        node = Leader(slots=1)
        self.assertEqual(node.table.entry_forms(), 2)

    def test_once_raised_the_forms_stay_without_heartbeats(self):
        node = Leader(slots=1, peers=(2,))
        self.assertEqual(node.table.entry_forms(), 1)
        node.beat(2)
        node.settle()
        self.assertEqual(node.table.entry_forms(), 2)
        node.registry.forget_all()  # as after an election: nobody heard from yet
        jobs = [commands.job_to_submit(next(_names), "true", 1000)]
        self.assertIsNotNone(node.dispatcher.place_new(jobs, 5000))

    def test_a_node_not_heard_from_counts_as_older(self):
        node = Leader(slots=1, peers=(2, 3))
        node.beat(2)
        before = node.raft.status().last_log_index
        jobs = node.submit(2)
        node.settle()
        self.assertEqual(node.placed(jobs), [LEADER, 2])
        self.assertNotIn("assign_jobs", self.kinds_since(node, before))
        node.beat(3)  # now every node applies the batched forms
        more = node.submit(3)
        node.beat(2, free_slots=3)
        node.settle()
        self.assertEqual(sorted(map(str, node.placed(more))), ["2", "3", "3"])
        self.assertIn("assign_jobs", self.kinds_since(node, before))


class WorkerRegistryTests(unittest.TestCase):
    """WorkerRegistry: the latest heartbeat of each remote worker, live within the expiry."""

    def setUp(self):
        self.clock = task.Clock()
        self.registry = WorkerRegistry(self.clock, EXPIRY)

    def test_unknown_worker_is_neither_live_nor_draining(self):
        self.assertIsNone(self.registry.latest(2))
        self.assertFalse(self.registry.is_live(2))
        self.assertFalse(self.registry.is_draining(2))
        self.assertEqual(self.registry.views(), {})

    def test_record_keeps_the_latest_heartbeat_and_its_time(self):
        self.clock.advance(10)
        self.registry.record(2, ["a", "b"], 1, False, 2000)
        self.clock.advance(1)
        self.registry.record(2, iter(["c"]), 3, True, 2001)
        self.assertEqual(self.registry.latest(2), Heartbeat(11.0, ("c",), 3, True, 2001))
        self.assertTrue(self.registry.is_draining(2))

    def test_record_tells_whether_the_worker_was_live_before(self):
        self.assertFalse(self.registry.record(2, [], 4, False, 2000))
        self.clock.advance(EXPIRY)
        self.assertTrue(self.registry.record(2, [], 4, False, 2000))
        self.clock.advance(EXPIRY + 0.1)
        self.assertFalse(self.registry.record(2, [], 4, False, 2000))

    def test_live_while_heard_from_within_the_expiry(self):
        self.registry.record(2, [], 4, False, 2000)
        self.clock.advance(EXPIRY)
        self.assertTrue(self.registry.is_live(2))  # exactly the expiry: still live
        self.clock.advance(0.1)
        self.assertFalse(self.registry.is_live(2))
        self.assertIsNotNone(self.registry.latest(2))  # silent, not forgotten

    def test_views_count_running_jobs_toward_the_slots(self):
        self.registry.record(2, ["a", "b"], 1, False, 2000)
        self.registry.record(3, [], 4, True, 3000)
        self.clock.advance(EXPIRY + 1)
        self.registry.record(4, ["c"], 0, False, 4000)
        self.assertEqual(
            self.registry.views(),
            {
                2: WorkerView(live=False, draining=False, slots=3, incarnation=2000),
                3: WorkerView(live=False, draining=True, slots=4, incarnation=3000),
                4: WorkerView(live=True, draining=False, slots=1, incarnation=4000),
            },
        )

    def test_excuse_moves_every_heartbeat_later_but_not_past_now(self):
        self.clock.advance(10)
        self.registry.record(2, [], 4, False, 2000)
        self.clock.advance(3)
        self.registry.record(3, [], 4, False, 3000)
        self.registry.excuse(2)
        self.assertEqual(self.registry.latest(2).received_at, 12.0)
        self.assertEqual(self.registry.latest(3).received_at, 13.0)
        self.registry.excuse(100)
        self.assertEqual(self.registry.latest(2).received_at, 13.0)

    def test_forget_all_drops_every_heartbeat(self):
        self.registry.record(2, [], 4, True, 2000)
        self.registry.record(3, [], 4, False, 3000)
        self.registry.forget_all()
        self.assertEqual(self.registry.views(), {})
        self.assertFalse(self.registry.is_draining(2))
        self.assertFalse(self.registry.record(3, [], 4, False, 3000))


class SubmitTimePlacementTests(unittest.TestCase):
    """Jobs submitted while a slot is free are assigned in their submit entry; a round
    assigns in one AssignJobs entry; promised slots are never given twice."""

    def setUp(self):
        self.node = Leader(slots=2)

    def place(self, count, now_ms=5000):
        jobs = [commands.job_to_submit(next(_names), "true", 1000) for _ in range(count)]
        release = self.node.dispatcher.place_new(jobs, now_ms)
        return jobs, release

    def entries_since(self, index, node=None):
        node = node or self.node
        return [
            scheduler_pb2.Command.FromString(entry.command)
            for entry in node.raft.log_entries(index + 1, 1000)
        ]

    def test_free_slots_assign_new_jobs_in_their_submit_entry(self):
        jobs, release = self.place(3)
        self.assertEqual([job.HasField("assignment") for job in jobs], [True, True, False])
        self.assertEqual(
            [(job.assignment.worker_id, job.assignment.worker_incarnation) for job in jobs[:2]],
            [(LEADER, LOCAL_INCARNATION)] * 2,
        )
        self.assertEqual(jobs[0].assignment.assigned_at_ms, 5000)
        before = self.node.raft.status().last_log_index
        self.node.raft.propose(commands.submit_jobs(jobs)).addBoth(release)
        self.node.settle()
        ids = [job.job_id for job in jobs]
        self.assertEqual(self.node.placed(ids), [LEADER, LEADER, None])
        self.assertEqual(
            [entry.WhichOneof("command_type") for entry in self.entries_since(before)],
            ["submit_jobs"],  # nothing else: the third job waits for a slot
        )

    def test_promised_slots_are_not_promised_again(self):
        first, release = self.place(2)
        self.assertTrue(all(job.HasField("assignment") for job in first))
        second, nothing = self.place(1)
        self.assertIsNone(nothing)
        self.assertFalse(second[0].HasField("assignment"))
        self.assertEqual(self.node.dispatcher.workers()[LEADER].slots, 0)
        release(None)  # e.g. the proposal failed
        self.assertEqual(self.node.dispatcher.workers()[LEADER].slots, 2)

    def test_waiting_jobs_go_first(self):
        node = Leader(slots=1)
        waiting = node.submit(2)  # the first runs, the second waits
        node.finish(waiting[0])  # its slot frees: the round gives it to the waiting job
        jobs = [commands.job_to_submit(next(_names), "true", 1000)]
        self.assertEqual(node.placed(waiting[1:]), [LEADER])
        node.submit(1)  # now one waits again (no free slot)
        self.assertIsNone(node.dispatcher.place_new(jobs, 5000))

    def test_a_round_assigns_in_one_entry(self):
        node = Leader(slots=1)
        jobs = node.submit(4)
        before = node.raft.status().last_log_index
        node.beat(2, free_slots=3)
        node.settle()
        self.assertEqual(node.placed(jobs), [LEADER, 2, 2, 2])
        kinds = [e.WhichOneof("command_type") for e in self.entries_since(before, node)]
        self.assertEqual(kinds.count("assign_jobs"), 1)
        self.assertNotIn("assign_job", kinds)

    def result_of(self, node, job_id, attempt=None):
        done = JobResult(JobStatus.COMPLETED, 0, "", "", False, None, 2000)
        attempt = node.table.get(job_id).attempts if attempt is None else attempt
        return commands.status_update(job_id, done, LEADER, attempt)

    def propose_results(self, node, updates):
        """As the leader's API does: the results, with the assignments of the slots
        they free, in one entry."""
        assignments, release = node.dispatcher.results_proposed(updates, 7000)
        node.raft.propose(commands.batch_update(updates, assignments)).addBoth(release)
        return assignments

    def test_the_next_job_is_assigned_in_the_entry_of_the_result_that_frees_its_slot(self):
        node = Leader(slots=1)
        first, second = node.submit(2)
        self.assertEqual(node.placed([first, second]), [LEADER, None])
        before = node.raft.status().last_log_index
        assignments = self.propose_results(node, [self.result_of(node, first)])
        self.assertEqual(
            [(a.job_id, a.worker_id, a.attempt) for a in assignments], [(second, LEADER, 1)]
        )
        node.settle()
        self.assertEqual(node.table.get(first).status, JobStatus.COMPLETED)
        self.assertEqual(node.placed([second]), [LEADER])
        self.assertEqual(node.table.get(second).started_at_ms, 7000)
        kinds = [e.WhichOneof("command_type") for e in self.entries_since(before, node)]
        self.assertEqual(kinds, ["batch_update_job_status"])  # one commit per turn of a slot
        self.assertEqual(node.dispatcher.workers()[LEADER].slots, 1)

    def test_jobs_being_assigned_by_a_round_are_not_assigned_again_with_results(self):
        storage = HeldAppends()
        node = Leader(slots=2, storage=storage)
        running = node.submit(2)
        waiting = node.submit(3)
        storage.holding = True
        node.beat(2, free_slots=1)
        node.clock.advance(0)  # a round assigns waiting[0] to worker 2: not yet committed
        self.assertEqual(node.placed(waiting), [None, None, None])
        # while it is in flight, a result frees a slot here: the next job goes there
        assignments = self.propose_results(node, [self.result_of(node, running[0])])
        self.assertEqual([a.job_id for a in assignments], [waiting[1]])
        storage.let_go()
        node.settle()
        self.assertEqual(node.placed(waiting), [2, LEADER, None])
        self.assertEqual([node.table.get(job).attempts for job in waiting], [1, 1, 0])

    def test_the_same_result_proposed_twice_frees_one_slot(self):
        storage = HeldAppends()
        node = Leader(slots=1, storage=storage)
        first, *waiting = node.submit(3)
        update = self.result_of(node, first)
        storage.holding = True  # both proposals in flight at once
        self.assertEqual(len(self.propose_results(node, [update])), 1)
        self.assertEqual(self.propose_results(node, [update]), [])  # e.g. a resent forward
        storage.let_go()
        node.settle()
        self.assertEqual(node.placed(waiting), [LEADER, None])
        self.assertEqual(node.dispatcher.workers()[LEADER].slots, 1)

    def test_a_result_of_another_attempt_frees_nothing(self):
        node = Leader(slots=1)
        first, second = node.submit(2)
        stale = self.result_of(node, first, attempt=7)
        assignments, release = node.dispatcher.results_proposed([stale], 7000)
        self.assertEqual(assignments, [])
        node.settle()
        self.assertEqual(node.placed([first, second]), [LEADER, None])
        release(None)
