"""ResultReporter: batches results, retries with back-off, never drops one."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from jobsched.jobs import commands
from jobsched.jobs.model import JobResult, JobStatus
from jobsched.worker.reporting import RETRY_DELAYS, ResultReporter


def update(job_id, status=JobStatus.COMPLETED, attempt=1):
    outcome = JobResult(
        status, 0 if status is JobStatus.COMPLETED else 1, "", "", False, None, 1000
    )
    return commands.status_update(job_id, outcome, 2, attempt)


class Leader:
    """`deliver` for the reporter: records each batch with its time; the test fires
    (or fails) the returned Deferreds."""

    def __init__(self, clock):
        self.clock = clock
        self.batches = []
        self.times = []
        self.pending = []

    def deliver(self, batch):
        self.batches.append([(u.job_id, u.status) for u in batch])
        self.times.append(self.clock.seconds())
        d = defer.Deferred()
        self.pending.append(d)
        return d

    def ack(self):
        self.pending.pop(0).callback(None)

    def fail(self):
        self.pending.pop(0).errback(RuntimeError("leader unreachable"))


def make():
    clock = task.Clock()
    leader = Leader(clock)
    return clock, leader, ResultReporter(leader.deliver, clock)


def ids(batch):
    return [job_id for job_id, _ in batch]


def test_results_ready_together_go_in_one_batch():
    clock, leader, reporter = make()
    reporter.report(update("a"))
    reporter.report(update("b"))
    clock.advance(0)
    assert [ids(b) for b in leader.batches] == [["a", "b"]]


def test_everything_queued_during_a_delivery_goes_in_the_next_batch():
    clock, leader, reporter = make()
    reporter.report(update("a"))
    clock.advance(0)
    reporter.report(update("b"))
    reporter.report(update("c"))
    clock.advance(1)
    assert [ids(b) for b in leader.batches] == [["a"]]  # one delivery in flight at a time

    leader.ack()
    clock.advance(0)
    assert [ids(b) for b in leader.batches] == [["a"], ["b", "c"]]
    leader.ack()
    assert reporter.pending_count == 0


def test_failed_delivery_is_retried_with_back_off_until_acknowledged():
    clock, leader, reporter = make()
    reporter.report(update("a"))
    clock.advance(0)
    for delay in RETRY_DELAYS[:3]:
        leader.fail()
        clock.advance(delay - 0.01)
        assert len(leader.pending) == 0, "retried before its back-off"
        clock.advance(0.01)
        assert len(leader.pending) == 1
    assert leader.times == pytest.approx([0, 0.1, 0.3, 0.8])
    assert all(ids(b) == ["a"] for b in leader.batches)
    leader.ack()
    assert reporter.pending_count == 0
    clock.advance(60)
    assert len(leader.batches) == 4  # nothing more once acknowledged


def test_back_off_grows_to_two_seconds_and_stays_there():
    clock, leader, reporter = make()
    reporter.report(update("a"))
    clock.advance(0)
    delays = []
    for _ in range(8):
        leader.fail()
        [retry] = clock.getDelayedCalls()
        delays.append(round(retry.getTime() - clock.seconds(), 6))
        clock.advance(delays[-1])
        assert len(leader.pending) == 1
    assert delays == [0.1, 0.2, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0]


def test_success_resets_the_back_off():
    clock, leader, reporter = make()
    reporter.report(update("a"))
    clock.advance(0)
    for _ in range(3):
        leader.fail()
        clock.advance(1)
    leader.ack()
    reporter.report(update("b"))
    clock.advance(0)
    leader.fail()
    clock.advance(0.1)
    assert ids(leader.batches[-1]) == ["b"] and len(leader.pending) == 1


def test_nothing_is_dropped_across_failures():
    """Results reported while deliveries keep failing all reach the leader."""
    clock, leader, reporter = make()
    reporter.report(update("a"))
    clock.advance(0)
    reporter.report(update("b"))
    leader.fail()
    reporter.report(update("c"))
    clock.advance(0.1)
    assert sorted(ids(leader.batches[-1])) == ["a", "b", "c"]
    leader.fail()
    clock.advance(0.2)
    leader.ack()
    assert reporter.pending_count == 0
    assert sorted(ids(leader.batches[-1])) == ["a", "b", "c"]


def test_deliver_raising_is_a_failed_delivery():
    clock = task.Clock()
    calls = []

    def deliver(batch):
        calls.append(clock.seconds())
        if len(calls) == 1:
            raise RuntimeError("no leader")
        return defer.succeed(None)

    reporter = ResultReporter(deliver, clock)
    reporter.report(update("a"))
    clock.advance(0)
    clock.advance(0.1)
    assert len(calls) == 2 and reporter.pending_count == 0


def test_newer_update_replaces_the_queued_one():
    clock, leader, reporter = make()
    reporter.report(update("a", JobStatus.COMPLETED))
    reporter.report(update("a", JobStatus.FAILED))
    clock.advance(0)
    assert leader.batches == [[("a", JobStatus.FAILED)]]


def test_newer_update_during_delivery_survives_the_older_ones_ack():
    clock, leader, reporter = make()
    reporter.report(update("a", JobStatus.COMPLETED))
    clock.advance(0)
    reporter.report(update("a", JobStatus.FAILED, attempt=2))
    assert reporter.pending_count == 1
    leader.ack()
    clock.advance(0)
    assert leader.batches == [[("a", JobStatus.COMPLETED)], [("a", JobStatus.FAILED)]]


def test_stop_cancels_the_pending_retry():
    clock, leader, reporter = make()
    reporter.report(update("a"))
    clock.advance(0)
    leader.fail()
    assert clock.getDelayedCalls()
    reporter.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(60)
    assert len(leader.batches) == 1


def test_flush_waits_until_everything_is_delivered():
    clock, leader, reporter = make()
    reporter.report(update("a"))
    flushed = reporter.flush(10)
    clock.advance(0)
    clock.advance(1)
    assert not flushed.called
    leader.ack()
    clock.advance(0.1)
    assert flushed.called and reporter.pending_count == 0


def test_flush_gives_up_after_its_timeout():
    clock, _leader, reporter = make()
    reporter.report(update("a"))
    flushed = reporter.flush(3)
    clock.pump([0.5] * 5)
    assert not flushed.called
    clock.pump([0.5] * 2)
    assert flushed.called and reporter.pending_count == 1
