"""WorkerService: runs this node's assignments, reports results, cancels and fences.

A fake executor (an IExecutor whose runs are Deferreds the test fires) and a real
JobTable and ResultReporter on a Clock; the reporter's router applies delivered batches
back to the table, as the leader would commit them.
"""

from __future__ import annotations

import itertools

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobsched.interfaces import IExecutor, IRouter, IWorker
from jobsched.jobs import commands
from jobsched.jobs.model import JobResult, JobStatus, Outcome
from jobsched.jobs.table import JobTable
from jobsched.worker.reporting import ResultReporter
from jobsched.worker.service import NODE_RESTARTED, WorkerService

NODE = 2
OTHER_NODE = 3
INCARNATION = 777
OLD_INCARNATION = 555

_index = itertools.count(1)


@implementer(IExecutor)
class FakeExecutor:
    """Runs nothing: each run is a Deferred the test fires with a JobResult."""

    name = "fake"

    def __init__(self, leftovers=()):
        self.calls = []
        self.runs = {}
        self.specs = []
        self.cancelled = []
        self._leftovers = list(leftovers)

    def start(self):
        self.calls.append("start")
        return defer.succeed(None)

    def stop(self):
        self.calls.append("stop")
        return defer.succeed(None)

    def run(self, spec):
        self.specs.append(spec)
        self.runs[spec.job_id] = d = defer.Deferred()
        return d

    def cancel(self, job_id):
        self.cancelled.append(job_id)
        return defer.succeed(None)

    def remove_leftovers(self):
        self.calls.append("remove_leftovers")
        return defer.succeed(list(self._leftovers))


@implementer(IRouter)
class CommittingRouter:
    """The router as the reporter uses it: each delivered batch is committed at once
    (applied to the table) and recorded."""

    def __init__(self, table):
        self.table = table
        self.batches = []
        self.held = None  # a list while deliveries are held back (the leader unreachable)

    def deliver_results(self, updates):
        if self.held is not None:
            delivery = defer.Deferred()
            self.held.append((list(updates), delivery))
            return delivery
        self.batches.append(list(updates))
        self.table.apply(next(_index), commands.batch_update(updates))
        return defer.succeed(None)

    def hold(self):
        """Keep results from reaching the table until `release`."""
        self.held = []

    def release(self):
        held, self.held = self.held, None
        for updates, delivery in held:
            self.deliver_results(updates)
            delivery.callback(None)

    def submit(self, request):
        raise AssertionError("the worker only delivers results")

    def cancel(self, job_id):
        raise AssertionError("the worker only delivers results")

    def cluster_status(self):
        raise AssertionError("the worker only delivers results")

    def raft_log(self, start_index, limit):
        raise AssertionError("the worker only delivers results")

    def send_heartbeat(self, request, timeout):
        raise AssertionError("the worker only delivers results")


class Harness:
    """A started worker (node 2) with its table, executor, reporter and clock."""

    def __init__(self, slots=2, leftovers=(), start=True):
        self.clock = task.Clock()
        self.table = JobTable()
        self.executor = FakeExecutor(leftovers)
        self.router = CommittingRouter(self.table)
        self.reporter = ResultReporter(self.router, self.clock)
        self.worker = WorkerService(
            NODE,
            self.table,
            self.executor,
            self.reporter,
            slots,
            self.clock,
            incarnation=INCARNATION,
        )
        if start:
            self.worker.startService()

    def apply(self, command):
        return self.table.apply(next(_index), command)

    def submit(self, job_id, command="echo hi", image="alpine:3", timeout=30):
        self.apply(
            commands.submit_job(
                job_id, command, 1000, image=image, timeout_seconds=timeout, max_attempts=3
            )
        )

    def assign(self, job_id, node=NODE, attempt=1, incarnation=INCARNATION):
        self.apply(commands.assign_job(job_id, node, attempt, incarnation))

    def settle(self):
        for _ in range(5):
            self.clock.advance(0)

    def reported(self):
        return [update for batch in self.router.batches for update in batch]


def result(status=JobStatus.COMPLETED, exit_code=0, output="out", error=""):
    return JobResult(status, exit_code, output, error, False, 5000, 6000)


class LifecycleTests(unittest.TestCase):
    def test_worker_provides_its_interface(self):
        self.assertTrue(verifyObject(IWorker, Harness().worker))

    def test_start_starts_executor_then_removes_leftovers(self):
        h = Harness(leftovers=["old-job"])
        self.assertEqual(h.executor.calls, ["start", "remove_leftovers"])
        h.worker.stopService()
        self.assertEqual(h.executor.calls[-1], "stop")

    def test_a_stopped_worker_takes_no_new_assignments(self):
        h = Harness()
        h.worker.stopService()
        h.submit("a")
        h.assign("a")
        h.settle()
        self.assertEqual(h.executor.specs, [])

    def test_incarnation_is_random_and_nonzero_by_default(self):
        table, clock = JobTable(), task.Clock()
        reporter = ResultReporter(CommittingRouter(table), clock)
        lives = {
            WorkerService(NODE, table, FakeExecutor(), reporter, 1, clock).incarnation
            for _ in range(5)
        }
        self.assertEqual(len(lives), 5)
        self.assertNotIn(0, lives)


class AssignmentTests(unittest.TestCase):
    def test_assignment_to_this_node_runs_and_its_result_is_committed(self):
        h = Harness()
        h.submit("a", command="echo hello", image="busybox:1", timeout=12)
        h.assign("a")
        h.settle()

        self.assertEqual(
            [
                (s.job_id, s.command, s.image, s.timeout_seconds, s.attempt)
                for s in h.executor.specs
            ],
            [("a", "echo hello", "busybox:1", 12, 1)],
        )
        self.assertEqual(h.worker.running_job_ids(), ["a"])
        self.assertEqual(h.reported(), [])

        h.executor.runs["a"].callback(result(output="hello\n", error="warn"))
        h.settle()

        [update] = h.reported()
        self.assertEqual((update.job_id, update.executed_by, update.attempt), ("a", NODE, 1))
        self.assertEqual((update.status, update.exit_code), (JobStatus.COMPLETED, 0))
        job = h.table.get("a")
        self.assertIs(job.status, JobStatus.COMPLETED)
        self.assertEqual(
            (job.executed_by, job.exit_code, job.output, job.error), (NODE, 0, "hello\n", "warn")
        )
        self.assertEqual(h.worker.running_job_ids(), [])

    def test_result_carries_the_attempt_it_ran(self):
        """A second attempt reports attempt 2, so the table accepts it."""
        h = Harness()
        h.submit("a")
        h.apply(commands.assign_job("a", OTHER_NODE, 1, 1))
        h.apply(commands.requeue_job("a", 1, "worker 3 lost", 9000))
        h.assign("a", attempt=2)
        h.settle()
        self.assertEqual([s.attempt for s in h.executor.specs], [2])
        h.executor.runs["a"].callback(result(status=JobStatus.FAILED, exit_code=3))
        h.settle()
        self.assertEqual([u.attempt for u in h.reported()], [2])
        job = h.table.get("a")
        self.assertEqual((job.status, job.exit_code, job.attempts), (JobStatus.FAILED, 3, 2))

    def test_assignment_to_another_node_is_ignored(self):
        h = Harness()
        h.submit("a")
        h.assign("a", node=OTHER_NODE)
        h.settle()
        self.assertEqual(h.executor.specs, [])
        self.assertEqual(h.reported(), [])
        self.assertEqual(h.worker.running_job_ids(), [])
        self.assertIs(h.table.get("a").status, JobStatus.RUNNING)

    def test_assignment_to_an_earlier_life_is_failed_node_restarted(self):
        h = Harness()
        h.submit("a")
        h.assign("a", incarnation=OLD_INCARNATION)
        h.settle()

        self.assertEqual(h.executor.specs, [])
        [update] = h.reported()
        self.assertEqual(update.status, JobStatus.FAILED)
        self.assertEqual(NODE_RESTARTED, "node restarted")
        self.assertEqual(update.error, NODE_RESTARTED)
        self.assertFalse(update.HasField("exit_code"))
        job = h.table.get("a")
        self.assertEqual(
            (job.status, job.error, job.exit_code), (JobStatus.FAILED, "node restarted", None)
        )
        self.assertEqual(job.executed_by, NODE)

    def test_start_adopts_jobs_already_running_here(self):
        """Entries replayed before start: this life's jobs run, an earlier life's fail,
        another node's are left alone."""
        h = Harness(start=False)
        for job_id in ("mine", "old", "theirs"):
            h.submit(job_id)
        h.assign("mine")
        h.assign("old", incarnation=OLD_INCARNATION)
        h.assign("theirs", node=OTHER_NODE)

        h.worker.startService()
        h.settle()

        self.assertEqual([s.job_id for s in h.executor.specs], ["mine"])
        self.assertEqual([(u.job_id, u.error) for u in h.reported()], [("old", "node restarted")])
        self.assertIs(h.table.get("old").status, JobStatus.FAILED)
        self.assertIs(h.table.get("theirs").status, JobStatus.RUNNING)
        self.assertEqual(h.worker.running_job_ids(), ["mine"])

    def test_restored_snapshot_is_adopted(self):
        h = Harness()
        source = JobTable()
        for n, job_id in enumerate(("mine", "old", "theirs"), start=1):
            source.apply(n, commands.submit_job(job_id, "true", 1000, max_attempts=3))
        source.apply(10, commands.assign_job("mine", NODE, 1, INCARNATION))
        source.apply(11, commands.assign_job("old", NODE, 1, OLD_INCARNATION))
        source.apply(12, commands.assign_job("theirs", OTHER_NODE, 1, INCARNATION))

        h.table.restore(source.snapshot())
        h.settle()

        self.assertEqual([s.job_id for s in h.executor.specs], ["mine"])
        self.assertEqual([(u.job_id, u.error) for u in h.reported()], [("old", "node restarted")])

    def test_restore_does_not_start_a_running_job_twice(self):
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        h.table.restore(h.table.snapshot())
        h.settle()
        self.assertEqual([s.job_id for s in h.executor.specs], ["a"])

    def test_restore_does_not_restart_an_attempt_whose_result_awaits_delivery(self):
        """The attempt finished here; its result has not reached the leader, so the
        restored table still says it runs here: it must not run a second time."""
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        h.router.hold()
        h.executor.runs["a"].callback(result())
        h.settle()
        self.assertIs(h.table.get("a").status, JobStatus.RUNNING)

        h.table.restore(h.table.snapshot())
        h.settle()

        self.assertEqual([(s.job_id, s.attempt) for s in h.executor.specs], [("a", 1)])
        h.router.release()
        h.settle()
        self.assertEqual([u.attempt for u in h.reported()], [1])
        self.assertIs(h.table.get("a").status, JobStatus.COMPLETED)

    def test_replayed_assignment_of_an_attempt_run_here_does_not_run_it_again(self):
        """A table restored to before the assignment replays it (twice here): the
        attempt already ran in this process life, so it is not started again."""
        h = Harness()
        h.submit("a")
        before = h.table.snapshot()
        h.assign("a")
        h.settle()
        h.router.hold()
        h.executor.runs["a"].callback(result())
        h.settle()

        for _ in range(2):
            h.table.restore(before)
            h.assign("a")
            h.settle()

        self.assertEqual([(s.job_id, s.attempt) for s in h.executor.specs], [("a", 1)])
        h.router.release()
        h.settle()
        self.assertIs(h.table.get("a").status, JobStatus.COMPLETED)

    def test_reassignment_of_the_same_attempt_number_does_not_run_it_again(self):
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        h.router.hold()
        h.executor.runs["a"].callback(result())
        h.apply(commands.requeue_job("a", 1, "worker 2 lost", 9000))
        h.assign("a", attempt=1)
        h.settle()
        self.assertEqual([(s.job_id, s.attempt) for s in h.executor.specs], [("a", 1)])

    def test_a_later_attempt_of_a_job_run_here_runs(self):
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        h.executor.runs["a"].callback(result(status=JobStatus.FAILED, exit_code=1))
        h.settle()
        h.table.restore(h.table.snapshot())
        h.settle()
        h.submit("b")
        h.assign("b")
        h.settle()
        h.apply(commands.requeue_job("b", 1, "worker 2 lost", 9000))
        h.executor.runs["b"].callback(result(status=JobStatus.FAILED, exit_code=None))
        h.assign("b", attempt=2)
        h.settle()
        self.assertEqual(
            [(s.job_id, s.attempt) for s in h.executor.specs], [("a", 1), ("b", 1), ("b", 2)]
        )

    def test_a_timed_out_attempt_is_reported_as_timed_out(self):
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        timed_out = JobResult(
            JobStatus.FAILED, None, "", "Timed out after 30s", False, 5000, 6000, timed_out=True
        )
        h.executor.runs["a"].callback(timed_out)
        h.settle()
        [update] = h.reported()
        self.assertIs(update.timed_out, True)
        self.assertEqual(h.table.get("a").attempt_history[0].outcome, Outcome.TIMED_OUT)

    def test_executor_error_fails_the_attempt(self):
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        h.executor.runs["a"].errback(RuntimeError("engine exploded"))
        h.settle()

        [update] = h.reported()
        self.assertEqual(update.status, JobStatus.FAILED)
        self.assertEqual(update.error, "Executor error: engine exploded")
        self.assertFalse(update.HasField("exit_code"))
        self.assertIs(h.table.get("a").status, JobStatus.FAILED)
        self.assertEqual(h.worker.running_job_ids(), [])
        [logged] = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(logged.getErrorMessage(), "engine exploded")

    def test_free_slots_and_running_job_ids_follow_the_runs(self):
        h = Harness(slots=2)
        self.assertEqual((h.worker.free_slots(), h.worker.running_job_ids()), (2, []))
        for job_id in ("a", "b", "c"):
            h.submit(job_id)
            h.assign(job_id)
        h.settle()
        self.assertEqual(sorted(h.worker.running_job_ids()), ["a", "b", "c"])
        self.assertEqual(h.worker.free_slots(), 0)  # never negative
        h.executor.runs["b"].callback(result())
        h.settle()
        self.assertEqual(sorted(h.worker.running_job_ids()), ["a", "c"])
        self.assertEqual(h.worker.free_slots(), 0)
        h.executor.runs["a"].callback(result())
        h.settle()
        self.assertEqual((h.worker.free_slots(), h.worker.running_job_ids()), (1, ["c"]))


class CancelAndTakeBackTests(unittest.TestCase):
    def test_cancel_kills_the_run_and_discards_its_result(self):
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()

        h.apply(commands.cancel_job("a", 7000))
        self.assertEqual(h.executor.cancelled, ["a"])
        h.executor.runs["a"].callback(
            result(status=JobStatus.FAILED, exit_code=None, error="Cancelled")
        )
        h.settle()

        self.assertEqual(h.reported(), [])
        job = h.table.get("a")
        self.assertEqual((job.status, job.completed_at_ms), (JobStatus.CANCELLED, 7000))
        self.assertEqual(h.worker.running_job_ids(), [])
        self.assertEqual(h.worker.free_slots(), 2)

    def test_cancel_of_a_job_not_running_here_kills_nothing(self):
        h = Harness()
        h.submit("a")
        h.submit("b")
        h.assign("b", node=OTHER_NODE)
        h.apply(commands.cancel_job("a", 7000))
        h.apply(commands.cancel_job("b", 7000))
        h.settle()
        self.assertEqual(h.executor.cancelled, [])

    def test_a_job_taken_back_by_the_leader_is_killed_here(self):
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        h.apply(commands.requeue_job("a", 1, "worker 2 lost", 9000))
        h.settle()
        self.assertEqual(h.executor.cancelled, ["a"])

    def test_stale_result_of_a_requeued_attempt_is_discarded(self):
        """The leader took the job back meanwhile: this attempt's result is not sent."""
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        h.apply(commands.requeue_job("a", 1, "worker 2 lost", 9000))
        h.executor.runs["a"].callback(result())
        h.settle()
        self.assertEqual(h.reported(), [])
        self.assertIs(h.table.get("a").status, JobStatus.PENDING)


class FenceTests(unittest.TestCase):
    def test_fence_kills_every_running_job_and_never_reports_them(self):
        h = Harness(slots=3)
        for job_id in ("a", "b"):
            h.submit(job_id)
            h.assign(job_id)
        h.settle()

        h.worker.fence()
        self.assertEqual(sorted(h.executor.cancelled), ["a", "b"])
        h.executor.runs["a"].callback(result(status=JobStatus.FAILED, exit_code=None))
        h.executor.runs["b"].callback(result())
        h.settle()

        self.assertEqual(h.reported(), [])
        self.assertEqual(h.worker.running_job_ids(), [])
        self.assertEqual(h.worker.free_slots(), 3)
        # the table still says running: the leader takes them back as lost
        self.assertIs(h.table.get("a").status, JobStatus.RUNNING)

    def test_an_assignment_applied_but_not_yet_started_is_listed_as_running(self):
        """The run starts in the next reactor turn; a heartbeat sent in between must not
        tell the leader the job is missing here."""
        h = Harness(slots=2)
        h.submit("a")
        h.assign("a")
        self.assertEqual(h.executor.specs, [])
        self.assertEqual((h.worker.running_job_ids(), h.worker.free_slots()), (["a"], 1))
        h.settle()
        self.assertEqual([spec.job_id for spec in h.executor.specs], ["a"])
        self.assertEqual(h.worker.running_job_ids(), ["a"])

    def test_an_assignment_not_yet_started_when_the_lease_ran_out_never_starts(self):
        """A node resumed after a pause applies an assignment made while it was paused
        (and perhaps already taken back by the leader), and its lease has run out: the
        fence runs before the job would start, so it never does; the job is no longer
        listed, and the leader takes it back."""
        h = Harness(slots=2)
        h.submit("a")
        h.assign("a")  # applied; the run would start in the next reactor turn
        h.submit("old")
        h.assign("old", incarnation=INCARNATION + 1)  # of an earlier life of this node
        h.worker.fence()
        h.settle()
        self.assertEqual(h.executor.specs, [])
        self.assertEqual(h.worker.running_job_ids(), [])
        self.assertEqual([(u.job_id, u.error) for u in h.reported()], [("old", NODE_RESTARTED)])
        h.apply(commands.requeue_job("a", 1, "worker 2 lost", 9000))
        h.assign("a", attempt=2)  # given back to this worker later: runs
        h.settle()
        self.assertEqual([spec.attempt for spec in h.executor.specs], [2])

    def test_fence_with_nothing_running_does_nothing(self):
        h = Harness()
        h.worker.fence()
        self.assertEqual(h.executor.cancelled, [])

    def test_jobs_started_after_a_fence_report_normally(self):
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        h.worker.fence()
        h.executor.runs["a"].callback(result())
        h.submit("b")
        h.assign("b")
        h.settle()
        h.executor.runs["b"].callback(result())
        h.settle()
        self.assertEqual([u.job_id for u in h.reported()], ["b"])

    def test_reassignment_while_the_fenced_attempt_is_still_dying_runs_later(self):
        """Fenced, requeued by the leader, given back to this worker (the least loaded)
        before the executor has finished killing attempt 1: attempt 2 must still run."""
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        h.worker.fence()  # executor.cancel in progress; the run has not ended yet
        h.apply(commands.requeue_job("a", 1, "worker 2 lost", 9000))
        h.assign("a", attempt=2)
        h.settle()
        h.executor.runs["a"].callback(result(status=JobStatus.FAILED, exit_code=None))
        h.settle()

        self.assertEqual([s.attempt for s in h.executor.specs], [1, 2])


class WindDownTests(unittest.TestCase):
    def test_wind_down_lets_running_jobs_finish_within_the_grace(self):
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        done = h.worker.wind_down(30)
        h.clock.advance(10)
        self.assertNoResult(done)
        self.assertEqual(h.executor.cancelled, [])
        h.executor.runs["a"].callback(result(output="ok"))
        h.clock.advance(0.1)
        h.settle()
        self.successResultOf(done)
        [update] = h.reported()
        self.assertEqual(
            (update.status, update.exit_code, update.output), (JobStatus.COMPLETED, 0, "ok")
        )

    def test_wind_down_kills_what_outlives_the_grace_and_reports_it_failed(self):
        h = Harness()
        h.submit("a")
        h.assign("a")
        h.settle()
        done = h.worker.wind_down(30)
        h.clock.pump([1] * 29)
        self.assertEqual(h.executor.cancelled, [])
        h.clock.pump([0.5] * 3)
        self.assertEqual(h.executor.cancelled, ["a"])
        h.executor.runs["a"].callback(
            result(status=JobStatus.FAILED, exit_code=None, output="partial", error="Cancelled")
        )
        h.clock.advance(0.1)
        h.settle()
        self.successResultOf(done)
        [update] = h.reported()
        self.assertEqual(update.status, JobStatus.FAILED)
        self.assertEqual((update.error, update.output), ("node shutting down", "partial"))
        self.assertFalse(update.HasField("exit_code"))
        self.assertEqual(h.table.get("a").error, "node shutting down")

    def test_wind_down_with_nothing_running_returns_at_once(self):
        h = Harness()
        self.successResultOf(h.worker.wind_down(30))
