"""ResultReporter: batches results, retries with back-off, never drops one."""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface import implementer

from jobsched.interfaces import IRouter
from jobsched.jobs import commands
from jobsched.jobs.model import JobResult, JobStatus
from jobsched.worker.reporting import RETRY_DELAYS, ResultReporter


def update(job_id, status=JobStatus.COMPLETED, attempt=1):
    outcome = JobResult(
        status, 0 if status is JobStatus.COMPLETED else 1, "", "", False, None, 1000
    )
    return commands.status_update(job_id, outcome, 2, attempt)


@implementer(IRouter)
class Leader:
    """The router as the reporter uses it: `deliver_results` records each batch with
    its time; the test fires (or fails) the returned Deferreds."""

    def __init__(self, clock):
        self.clock = clock
        self.batches = []
        self.times = []
        self.pending = []

    def deliver_results(self, updates):
        self.batches.append([(u.job_id, u.status) for u in updates])
        self.times.append(self.clock.seconds())
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def ack(self):
        self.pending.pop(0).callback(None)

    def fail(self):
        self.pending.pop(0).errback(RuntimeError("leader unreachable"))

    def submit(self, request):
        raise AssertionError("the reporter only delivers results")

    def cancel(self, job_id):
        raise AssertionError("the reporter only delivers results")

    def cluster_status(self):
        raise AssertionError("the reporter only delivers results")

    def raft_log(self, start_index, limit):
        raise AssertionError("the reporter only delivers results")

    def send_heartbeat(self, request, timeout):
        raise AssertionError("the reporter only delivers results")


def ids(batch):
    return [job_id for job_id, _ in batch]


class ReporterTestCase(unittest.TestCase):
    """A reporter on a Clock, delivering to a `Leader` the test answers."""

    def setUp(self):
        self.clock = task.Clock()
        self.leader = Leader(self.clock)
        self.reporter = ResultReporter(self.leader, self.clock)

    def batch_ids(self):
        return [ids(b) for b in self.leader.batches]


class BatchingTests(ReporterTestCase):
    def test_results_ready_together_go_in_one_batch(self):
        self.reporter.report(update("a"))
        self.reporter.report(update("b"))
        self.clock.advance(0)
        self.assertEqual(self.batch_ids(), [["a", "b"]])

    def test_everything_queued_during_a_delivery_goes_in_the_next_batch(self):
        self.reporter.report(update("a"))
        self.clock.advance(0)
        self.reporter.report(update("b"))
        self.reporter.report(update("c"))
        self.clock.advance(1)
        self.assertEqual(self.batch_ids(), [["a"]])  # one delivery in flight at a time

        self.leader.ack()
        self.clock.advance(0)
        self.assertEqual(self.batch_ids(), [["a"], ["b", "c"]])
        self.leader.ack()
        self.assertEqual(self.reporter.pending_count, 0)

    def test_newer_update_replaces_the_queued_one(self):
        self.reporter.report(update("a", JobStatus.COMPLETED))
        self.reporter.report(update("a", JobStatus.FAILED))
        self.clock.advance(0)
        self.assertEqual(self.leader.batches, [[("a", JobStatus.FAILED)]])

    def test_newer_update_during_delivery_survives_the_older_ones_ack(self):
        self.reporter.report(update("a", JobStatus.COMPLETED))
        self.clock.advance(0)
        self.reporter.report(update("a", JobStatus.FAILED, attempt=2))
        self.assertEqual(self.reporter.pending_count, 1)
        self.leader.ack()
        self.clock.advance(0)
        self.assertEqual(
            self.leader.batches, [[("a", JobStatus.COMPLETED)], [("a", JobStatus.FAILED)]]
        )


class RetryTests(ReporterTestCase):
    def test_failed_delivery_is_retried_with_back_off_until_acknowledged(self):
        self.reporter.report(update("a"))
        self.clock.advance(0)
        for delay in RETRY_DELAYS[:3]:
            self.leader.fail()
            self.clock.advance(delay - 0.01)
            self.assertEqual(len(self.leader.pending), 0, "retried before its back-off")
            self.clock.advance(0.01)
            self.assertEqual(len(self.leader.pending), 1)
        self.assertEqual([round(t, 6) for t in self.leader.times], [0, 0.1, 0.3, 0.8])
        self.assertEqual(self.batch_ids(), [["a"]] * 4)
        self.leader.ack()
        self.assertEqual(self.reporter.pending_count, 0)
        self.clock.advance(60)
        self.assertEqual(len(self.leader.batches), 4)  # nothing more once acknowledged

    def test_back_off_grows_to_two_seconds_and_stays_there(self):
        self.reporter.report(update("a"))
        self.clock.advance(0)
        delays = []
        for _ in range(8):
            self.leader.fail()
            [retry] = self.clock.getDelayedCalls()
            delays.append(round(retry.getTime() - self.clock.seconds(), 6))
            self.clock.advance(delays[-1])
            self.assertEqual(len(self.leader.pending), 1)
        self.assertEqual(delays, [0.1, 0.2, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0])

    def test_success_resets_the_back_off(self):
        self.reporter.report(update("a"))
        self.clock.advance(0)
        for _ in range(3):
            self.leader.fail()
            self.clock.advance(1)
        self.leader.ack()
        self.reporter.report(update("b"))
        self.clock.advance(0)
        self.leader.fail()
        self.clock.advance(0.1)
        self.assertEqual(ids(self.leader.batches[-1]), ["b"])
        self.assertEqual(len(self.leader.pending), 1)

    def test_nothing_is_dropped_across_failures(self):
        """Results reported while deliveries keep failing all reach the leader."""
        self.reporter.report(update("a"))
        self.clock.advance(0)
        self.reporter.report(update("b"))
        self.leader.fail()
        self.reporter.report(update("c"))
        self.clock.advance(0.1)
        self.assertEqual(sorted(ids(self.leader.batches[-1])), ["a", "b", "c"])
        self.leader.fail()
        self.clock.advance(0.2)
        self.leader.ack()
        self.assertEqual(self.reporter.pending_count, 0)
        self.assertEqual(sorted(ids(self.leader.batches[-1])), ["a", "b", "c"])

    def test_deliver_raising_is_a_failed_delivery(self):
        calls = []

        class RaisingOnce(Leader):
            def deliver_results(self, updates):
                calls.append(self.clock.seconds())
                if len(calls) == 1:
                    raise RuntimeError("no leader")
                return defer.succeed(None)

        reporter = ResultReporter(RaisingOnce(self.clock), self.clock)
        reporter.report(update("a"))
        self.clock.advance(0)
        self.clock.advance(0.1)
        self.assertEqual(len(calls), 2)
        self.assertEqual(reporter.pending_count, 0)


class StopAndFlushTests(ReporterTestCase):
    def test_stop_cancels_the_pending_retry(self):
        self.reporter.report(update("a"))
        self.clock.advance(0)
        self.leader.fail()
        self.assertTrue(self.clock.getDelayedCalls())
        self.reporter.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(len(self.leader.batches), 1)

    def test_flush_waits_until_everything_is_delivered(self):
        self.reporter.report(update("a"))
        flushed = self.reporter.flush(10)
        self.clock.advance(0)
        self.clock.advance(1)
        self.assertNoResult(flushed)
        self.leader.ack()
        self.clock.advance(0.1)
        self.successResultOf(flushed)
        self.assertEqual(self.reporter.pending_count, 0)

    def test_flush_gives_up_after_its_timeout(self):
        self.reporter.report(update("a"))
        flushed = self.reporter.flush(3)
        self.clock.pump([0.5] * 5)
        self.assertNoResult(flushed)
        self.clock.pump([0.5] * 2)
        self.successResultOf(flushed)
        self.assertEqual(self.reporter.pending_count, 1)
