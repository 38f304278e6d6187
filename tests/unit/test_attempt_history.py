"""Attempt history (API.md §4): built by JobTable.apply from the entries, kept in
snapshots, shown by GetJobStatus and the REST job object."""

from __future__ import annotations

import dataclasses
import itertools
import json

from twisted.trial import unittest

from jobsched._proto import scheduler_pb2
from jobsched.api.json_views import job_json
from jobsched.jobs import commands
from jobsched.jobs.model import AttemptRecord, JobResult, JobStatus, Outcome
from jobsched.jobs.table import JobTable
from jobsched.jobs.wire import job_to_status_response

T0 = 1_700_000_000_000
ASSIGNED = T0 + 100
LOST_AT = T0 + 5_000
_index = itertools.count(1)


def apply(table, command):
    return table.apply(next(_index), command)


def submit(table, job_id="a", max_attempts=3):
    apply(table, commands.submit_job(job_id, "sleep 1", T0, max_attempts=max_attempts))


def assign(table, job_id="a", worker=1, attempt=1, at=ASSIGNED):
    return apply(table, commands.assign_job(job_id, worker, attempt, 7, at))


def report(
    table,
    job_id="a",
    worker=1,
    attempt=1,
    status=JobStatus.COMPLETED,
    started=T0 + 150,
    completed=T0 + 900,
    timed_out=False,
    error="",
):
    exit_code = None if timed_out else int(status is JobStatus.FAILED)
    result = JobResult(status, exit_code, "out", error, False, started, completed, timed_out)
    update = commands.status_update(job_id, result, worker, attempt)
    [outcome] = apply(table, commands.batch_update([update]))
    return outcome


def requeue(table, job_id="a", attempt=1, worker=1, at=LOST_AT):
    return apply(table, commands.requeue_job(job_id, attempt, f"worker {worker} lost", at))


def history(table, job_id="a"):
    return list(table.get(job_id).attempt_history)


def record(attempt, worker, started, finished=None, outcome=None, late=False):
    return AttemptRecord(attempt, worker, started, finished, outcome, late)


class AttemptTransitionTests(unittest.TestCase):
    def test_a_pending_job_has_no_attempts(self):
        table = JobTable()
        submit(table)
        self.assertEqual(history(table), [])

    def test_assignment_starts_a_record_at_the_assignment_time(self):
        table = JobTable()
        submit(table)
        assign(table, worker=2)
        self.assertEqual(history(table), [record(1, 2, ASSIGNED)])

    def test_assignment_without_a_time_starts_a_record_without_one(self):
        table = JobTable()
        submit(table)
        assign(table, at=0)
        self.assertEqual(history(table), [record(1, 1, None)])

    def test_result_finishes_the_record_with_the_real_start_and_end(self):
        table = JobTable()
        submit(table)
        assign(table)
        report(table)
        self.assertEqual(history(table), [record(1, 1, T0 + 150, T0 + 900, Outcome.COMPLETED)])

    def test_failed_result_is_a_failed_attempt(self):
        table = JobTable()
        submit(table)
        assign(table)
        report(table, status=JobStatus.FAILED)
        self.assertEqual(history(table)[0].outcome, Outcome.FAILED)

    def test_result_without_a_start_keeps_the_assignment_time(self):
        """e.g. `node restarted` or a missing image: the command never started."""
        table = JobTable()
        submit(table)
        assign(table)
        report(table, status=JobStatus.FAILED, started=None)
        self.assertEqual(history(table), [record(1, 1, ASSIGNED, T0 + 900, Outcome.FAILED)])
        self.assertIsNone(table.get("a").started_at_ms)

    def test_timed_out_comes_from_the_flag(self):
        table = JobTable()
        submit(table)
        assign(table)
        report(table, status=JobStatus.FAILED, timed_out=True, error="Timed out after 1s")
        self.assertEqual(history(table)[0].outcome, Outcome.TIMED_OUT)
        self.assertIs(table.get("a").status, JobStatus.FAILED)

    def test_timeout_text_without_the_flag_is_a_plain_failure(self):
        table = JobTable()
        submit(table)
        assign(table)
        report(table, status=JobStatus.FAILED, error="Timed out after 1s")
        self.assertEqual(history(table)[0].outcome, Outcome.FAILED)

    def test_lost_attempt_then_a_second_one_elsewhere(self):
        table = JobTable()
        submit(table)
        assign(table, worker=1)
        requeue(table)
        self.assertEqual(history(table), [record(1, 1, ASSIGNED, LOST_AT, Outcome.LOST)])
        assign(table, worker=2, attempt=2, at=T0 + 6_000)
        report(table, worker=2, attempt=2, started=T0 + 6_050, completed=T0 + 7_000)
        self.assertEqual(
            history(table),
            [
                record(1, 1, ASSIGNED, LOST_AT, Outcome.LOST),
                record(2, 2, T0 + 6_050, T0 + 7_000, Outcome.COMPLETED),
            ],
        )
        self.assertEqual(table.get("a").attempts, 2)

    def test_lost_last_attempt_fails_the_job_with_one_lost_attempt(self):
        table = JobTable()
        submit(table, max_attempts=1)
        assign(table, worker=3)
        requeue(table, worker=3)
        job = table.get("a")
        self.assertEqual((job.status, job.error), (JobStatus.FAILED, "worker 3 lost"))
        self.assertEqual(history(table), [record(1, 3, ASSIGNED, LOST_AT, Outcome.LOST)])

    def test_cancel_marks_the_running_attempt_cancelled(self):
        table = JobTable()
        submit(table)
        assign(table)
        apply(table, commands.cancel_job("a", T0 + 300))
        self.assertEqual(history(table), [record(1, 1, ASSIGNED, T0 + 300, Outcome.CANCELLED)])

    def test_cancel_of_a_requeued_job_adds_nothing(self):
        table = JobTable()
        submit(table)
        assign(table)
        requeue(table)
        apply(table, commands.cancel_job("a", T0 + 9_000))
        self.assertEqual(history(table), [record(1, 1, ASSIGNED, LOST_AT, Outcome.LOST)])

    def test_rejected_assignment_adds_no_record(self):
        table = JobTable()
        submit(table)
        assign(table)
        self.assertIsNone(assign(table, worker=2, attempt=2))
        self.assertEqual(history(table), [record(1, 1, ASSIGNED)])


class LateResultTests(unittest.TestCase):
    """A result whose attempt was declared lost: the record says it ran, nothing else
    changes."""

    def watch(self, table):
        events = []
        table.add_listener(lambda event, job: events.append(event))
        return events

    def check_late_only(self, table, before, events):
        after = table.get("a")
        self.assertEqual(dataclasses.replace(after, attempt_history=()), before)
        self.assertEqual(events, ["late_result"])

    def test_late_result_while_the_next_attempt_runs(self):
        table = JobTable()
        submit(table)
        assign(table, worker=1)
        requeue(table)
        assign(table, worker=2, attempt=2)
        before = dataclasses.replace(table.get("a"), attempt_history=())
        events = self.watch(table)

        self.assertIsNone(report(table, worker=1, attempt=1))

        self.check_late_only(table, before, events)
        self.assertEqual(
            history(table),
            [record(1, 1, ASSIGNED, LOST_AT, Outcome.LOST, late=True), record(2, 2, ASSIGNED)],
        )

    def test_late_result_while_the_job_waits_for_its_next_attempt(self):
        table = JobTable()
        submit(table)
        assign(table)
        requeue(table)
        before = dataclasses.replace(table.get("a"), attempt_history=())
        events = self.watch(table)
        report(table, attempt=1)
        self.check_late_only(table, before, events)
        self.assertIs(table.get("a").status, JobStatus.PENDING)
        self.assertTrue(history(table)[0].late)

    def test_a_late_result_in_another_workers_name_is_not_late(self):
        table = JobTable()
        submit(table)
        assign(table, worker=1)
        requeue(table)
        report(table, attempt=1, worker=2)
        self.assertFalse(history(table)[0].late)
        report(table, attempt=1, worker=1)
        self.assertTrue(history(table)[0].late)

    def test_late_result_of_a_job_failed_as_lost_keeps_it_failed(self):
        """max_attempts = 1: the job failed `worker <id> lost`; the late result shows
        that the attempt did run, and the job stays failed (it never runs twice)."""
        table = JobTable()
        submit(table, max_attempts=1)
        assign(table)
        requeue(table)
        before = dataclasses.replace(table.get("a"), attempt_history=())
        events = self.watch(table)
        report(table, attempt=1)
        self.check_late_only(table, before, events)
        self.assertEqual(
            (table.get("a").status, table.get("a").error), (JobStatus.FAILED, "worker 1 lost")
        )
        self.assertEqual(history(table), [record(1, 1, ASSIGNED, LOST_AT, Outcome.LOST, late=True)])

    def test_a_second_copy_of_the_late_result_changes_nothing(self):
        table = JobTable()
        submit(table)
        assign(table)
        requeue(table)
        report(table, attempt=1)
        before = table.snapshot()
        events = self.watch(table)
        report(table, attempt=1)
        self.assertEqual((table.snapshot(), events), (before, []))

    def check_stale_result_changes_nothing(self, setup):
        table = JobTable()
        submit(table)
        assign(table)
        setup(table)
        before = table.snapshot()
        events = self.watch(table)
        report(table, attempt=1)
        self.assertEqual((table.snapshot(), events), (before, []))

    def test_result_of_a_cancelled_attempt_is_not_late(self):
        self.check_stale_result_changes_nothing(
            lambda table: apply(table, commands.cancel_job("a", T0 + 300))
        )

    def test_repeated_result_of_a_completed_attempt_is_not_late(self):
        self.check_stale_result_changes_nothing(lambda table: report(table, attempt=1))


class HistorySnapshotTests(unittest.TestCase):
    def busy_table(self):
        """Every kind of record: running, completed, lost and late, cancelled, timed out."""
        table = JobTable()
        for job_id in "abcd":
            submit(table, job_id)
            assign(table, job_id)
        report(table, "a")
        requeue(table, "b")
        report(table, "b", attempt=1)
        assign(table, "b", worker=2, attempt=2)
        apply(table, commands.cancel_job("c", T0 + 300))
        report(table, "d", status=JobStatus.FAILED, timed_out=True)
        submit(table, "e")
        return table

    def test_snapshot_round_trip_keeps_every_history(self):
        table = self.busy_table()
        restored = JobTable()
        restored.restore(table.snapshot())
        for job_id in "abcde":
            self.assertEqual(restored.get(job_id), table.get(job_id))
        self.assertEqual(restored.snapshot(), table.snapshot())
        self.assertEqual(
            [r.outcome for r in restored.get("b").attempt_history], [Outcome.LOST, None]
        )
        # the restored table goes on as the original does
        for replica in (table, restored):
            report(replica, "b", worker=2, attempt=2)
        self.assertEqual(restored.snapshot(), table.snapshot())

    def test_snapshot_records_history_as_plain_json(self):
        table = JobTable()
        submit(table)
        assign(table)
        requeue(table)
        [job] = json.loads(table.snapshot())["jobs"]
        self.assertEqual(
            job["attempt_history"],
            [
                {
                    "attempt": 1,
                    "worker": 1,
                    "started_at_ms": ASSIGNED,
                    "finished_at_ms": LOST_AT,
                    "outcome": "lost",
                    "late": False,
                }
            ],
        )

    def test_snapshot_without_histories_restores_with_empty_ones(self):
        table = self.busy_table()
        state = json.loads(table.snapshot())
        for job in state["jobs"]:
            del job["attempt_history"]
        restored = JobTable()
        restored.restore(json.dumps(state).encode())
        for job_id in "abcde":
            self.assertEqual(restored.get(job_id).attempt_history, ())
            self.assertEqual(restored.get(job_id).status, table.get(job_id).status)
        # a running attempt without a record finishes without one; the next one records
        report(restored, "b", worker=2, attempt=2, status=JobStatus.FAILED)
        self.assertEqual(restored.get("b").attempt_history, ())
        assign(restored, "e", worker=3)
        self.assertEqual(history(restored, "e"), [record(1, 3, ASSIGNED)])

    def test_snapshot_with_an_unknown_outcome_is_refused(self):
        state = json.loads(self.busy_table().snapshot())
        state["jobs"][0]["attempt_history"][0]["outcome"] = "vanished"
        table = JobTable()
        with self.assertRaises(ValueError):
            table.restore(json.dumps(state).encode())
        self.assertEqual(len(table), 0)


class HistoryViewTests(unittest.TestCase):
    def two_attempts(self):
        table = JobTable()
        submit(table)
        assign(table, worker=1)
        requeue(table)
        report(table, attempt=1)
        assign(table, worker=2, attempt=2, at=0)
        return table.get("a")

    def test_get_job_status_carries_the_history(self):
        response = job_to_status_response(self.two_attempts())
        lost, running = response.attempt_history
        self.assertEqual(
            (lost.attempt, lost.worker, lost.started_at_ms, lost.finished_at_ms),
            (1, 1, ASSIGNED, LOST_AT),
        )
        self.assertEqual((lost.outcome, lost.late), ("lost", True))
        self.assertEqual((running.attempt, running.worker, running.outcome), (2, 2, ""))
        self.assertFalse(running.HasField("started_at_ms"))
        self.assertFalse(running.HasField("finished_at_ms"))
        self.assertFalse(running.late)

    def test_rest_job_object_carries_the_history(self):
        self.assertEqual(
            job_json(self.two_attempts())["attempt_history"],
            [
                {
                    "attempt": 1,
                    "worker": 1,
                    "started_at_ms": ASSIGNED,
                    "finished_at_ms": LOST_AT,
                    "outcome": "lost",
                    "late": True,
                },
                {
                    "attempt": 2,
                    "worker": 2,
                    "started_at_ms": None,
                    "finished_at_ms": None,
                    "outcome": None,
                    "late": False,
                },
            ],
        )

    def test_rest_history_is_json_with_lower_case_outcomes(self):
        table = JobTable()
        submit(table)
        assign(table)
        report(table, status=JobStatus.FAILED, timed_out=True)
        text = json.dumps(job_json(table.get("a")))
        self.assertEqual(json.loads(text)["attempt_history"][0]["outcome"], "timed_out")

    def test_a_job_never_assigned_shows_an_empty_history(self):
        table = JobTable()
        submit(table)
        self.assertEqual(job_json(table.get("a"))["attempt_history"], [])
        self.assertEqual(len(job_to_status_response(table.get("a")).attempt_history), 0)


class TimedOutOnTheWireTests(unittest.TestCase):
    def test_status_update_carries_timed_out_into_the_batch_entry(self):
        result = JobResult(JobStatus.FAILED, None, "", "Timed out after 2s", False, 1, 2, True)
        update = commands.status_update("a", result, 1, 1)
        self.assertTrue(update.timed_out)
        entry = scheduler_pb2.Command.FromString(commands.batch_update([update]))
        self.assertTrue(entry.batch_update_job_status.updates[0].timed_out)

    def test_timed_out_is_false_unless_the_executor_says_so(self):
        result = JobResult(JobStatus.FAILED, 1, "", "", False, 1, 2)
        self.assertFalse(commands.status_update("a", result, 1, 1).timed_out)
