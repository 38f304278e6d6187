"""JobTable: every apply rule, the queries, paging tokens, snapshots."""

from __future__ import annotations

import dataclasses
import itertools
import json

from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched._proto import scheduler_pb2
from jobsched.errors import InvalidArgument
from jobsched.interfaces import IJobTable, IStateMachine
from jobsched.jobs import commands
from jobsched.jobs import table as table_module
from jobsched.jobs.model import Job, JobResult, JobStatus
from jobsched.jobs.table import (
    IDEMPOTENCY_WINDOW_MS,
    JobTable,
    ListQuery,
)
from tests.cases import add_cases
from tests.unit.snapshot_forms import as_format_1

T0 = 1_700_000_000_000
_index = itertools.count(1)


def apply(table: JobTable, command: bytes):
    """Apply one entry (serialized Command bytes, as Raft hands them over)."""
    return table.apply(next(_index), command)


def submit(table, job_id, created=T0, command="echo hi", key="", **kwargs):
    return apply(
        table, commands.submit_job(job_id, command, created, idempotency_key=key, **kwargs)
    )


def assign(table, job_id, worker=1, attempt=1, assigned_at=0):
    return apply(table, commands.assign_job(job_id, worker, attempt, 0, assigned_at))


def result(
    status=JobStatus.COMPLETED,
    exit_code=0,
    output="out",
    error="",
    started=T0 + 10,
    completed=T0 + 20,
    truncated=False,
):
    return JobResult(status, exit_code, output, error, truncated, started, completed)


def finish(table, job_id, worker=1, attempt=1, **kwargs):
    """Commit one finished attempt as the leader does (a batch of one); its outcome."""
    update = commands.status_update(job_id, result(**kwargs), worker, attempt)
    [outcome] = apply(table, commands.batch_update([update]))
    return outcome


def cancel(table, job_id, at=T0 + 99):
    return apply(table, commands.cancel_job(job_id, at))


def running_job(table, job_id, worker=1):
    submit(table, job_id)
    assign(table, job_id, worker)


def ids(jobs):
    return [job.job_id for job in jobs]


class InterfaceTests(unittest.TestCase):
    """JobTable is Raft's state machine and the job table the node reads."""

    def test_job_table_provides_state_machine(self):
        self.assertTrue(verifyObject(IStateMachine, JobTable()))

    def test_job_table_provides_job_table_interface(self):
        self.assertTrue(verifyObject(IJobTable, JobTable()))

    def test_noop_entry_changes_nothing(self):
        table = JobTable()
        before = table.snapshot()
        self.assertIsNone(apply(table, b""))
        self.assertIsNone(apply(table, scheduler_pb2.Command().SerializeToString()))
        self.assertEqual(table.snapshot(), before)


class SubmitTests(unittest.TestCase):
    """submit_job: new jobs, duplicates and idempotency keys."""

    def test_submit_adds_pending_job_with_entry_fields(self):
        table = JobTable()
        job = submit(
            table,
            "a",
            command="Echo X",
            image="alpine:3",
            timeout_seconds=7,
            max_attempts=2,
            key="k1",
        )
        self.assertEqual(
            job,
            Job(
                job_id="a",
                command="Echo X",
                created_at_ms=T0,
                image="alpine:3",
                timeout_seconds=7,
                max_attempts=2,
                idempotency_key="k1",
            ),
        )
        self.assertIs(job.status, JobStatus.PENDING)
        self.assertEqual(table.get("a"), job)
        self.assertEqual(len(table), 1)
        self.assertIsNone(table.get("missing"))

    def test_submit_known_job_id_returns_existing_job_unchanged(self):
        table = JobTable()
        submit(table, "a", command="first")
        again = submit(table, "a", command="second", created=T0 + 5)
        self.assertEqual(again.command, "first")
        self.assertEqual(again.created_at_ms, T0)
        self.assertEqual(len(table), 1)

    def test_submit_known_job_id_after_it_ran_returns_its_current_state(self):
        table = JobTable()
        running_job(table, "a")
        self.assertIs(submit(table, "a").status, JobStatus.RUNNING)
        self.assertEqual(table.count(JobStatus.PENDING), 0)

    def test_submit_without_job_id_is_ignored(self):
        table = JobTable()
        self.assertIsNone(submit(table, ""))
        self.assertEqual(len(table), 0)

    def test_idempotency_key_within_24h_returns_original_job(self):
        table = JobTable()
        first = submit(table, "a", key="k")
        again = submit(table, "b", created=T0 + IDEMPOTENCY_WINDOW_MS - 1, key="k")
        self.assertEqual(first.job_id, "a")
        self.assertEqual(again.job_id, "a")
        self.assertIsNone(table.get("b"))
        self.assertEqual(len(table), 1)

    def test_idempotency_key_after_24h_creates_new_job_and_remaps_key(self):
        table = JobTable()
        submit(table, "a", key="k")
        later = T0 + IDEMPOTENCY_WINDOW_MS
        self.assertEqual(submit(table, "b", created=later, key="k").job_id, "b")
        self.assertEqual(submit(table, "c", created=later + 1000, key="k").job_id, "b")
        self.assertEqual(ids(table.list_jobs(ListQuery()).jobs), ["a", "b"])

    def test_idempotency_window_measured_from_entry_time_even_if_it_steps_back(self):
        table = JobTable()
        submit(table, "a", key="k")
        self.assertEqual(submit(table, "b", created=T0 - 5000, key="k").job_id, "a")

    def test_idempotency_window_holds_when_entry_times_are_out_of_order(self):
        """A key from a leader whose clock was behind sits after a newer key: it is still
        measured against its own time, not kept alive by its neighbour."""
        table = JobTable()
        submit(table, "a", key="newer", created=T0 + 10_000)
        submit(table, "b", key="older", created=T0)
        again = submit(table, "c", key="older", created=T0 + IDEMPOTENCY_WINDOW_MS)
        self.assertEqual(again.job_id, "c")
        self.assertEqual(
            submit(table, "d", key="newer", created=T0 + IDEMPOTENCY_WINDOW_MS).job_id, "a"
        )

    def test_different_idempotency_keys_make_different_jobs(self):
        table = JobTable()
        submit(table, "a", key="k1")
        self.assertEqual(submit(table, "b", key="k2").job_id, "b")
        self.assertEqual(submit(table, "c").job_id, "c")
        self.assertEqual(submit(table, "d").job_id, "d")

    def test_expired_idempotency_keys_are_forgotten(self):
        table = JobTable()
        submit(table, "a", key="old")
        submit(table, "b", key="new", created=T0 + 1000)
        submit(table, "c", created=T0 + IDEMPOTENCY_WINDOW_MS + 1)
        keys = [k[0] for k in json.loads(table.snapshot())["idempotency_keys"]]
        self.assertEqual(keys, ["new"])


class AssignTests(unittest.TestCase):
    """assign_job: only a pending job starts running."""

    def test_assign_makes_pending_job_running(self):
        table = JobTable()
        submit(table, "a")
        job = assign(table, "a", worker=3, attempt=2)
        self.assertIs(job.status, JobStatus.RUNNING)
        self.assertEqual((job.assigned_worker, job.attempts), (3, 2))
        self.assertEqual(table.get("a"), job)

    def test_assign_without_attempt_counts_on(self):
        table = JobTable()
        submit(table, "a")
        self.assertEqual(assign(table, "a", attempt=0).attempts, 1)

    def test_assign_shows_where_and_since_when_the_job_runs(self):
        """Until its result arrives, a running job shows the assigned worker as
        executed_by and the assignment time as started_at."""
        table = JobTable()
        submit(table, "a")
        job = assign(table, "a", worker=3, assigned_at=T0 + 5)
        self.assertEqual((job.executed_by, job.started_at_ms), (3, T0 + 5))
        self.assertEqual(table.get("a"), job)
        self.assertEqual(listed(table, worker_id=3), ["a"])

    def test_assign_without_a_time_leaves_started_at_unknown(self):
        table = JobTable()
        submit(table, "a")
        job = assign(table, "a", worker=3, assigned_at=0)
        self.assertEqual((job.executed_by, job.started_at_ms), (3, None))

    def test_result_replaces_the_assignment_worker_and_start(self):
        """The worker's result brings where and when the attempt really ran (a start
        it does not know stays unknown)."""
        table = JobTable()
        for job_id in ("a", "b"):
            submit(table, job_id)
            assign(table, job_id, worker=1, assigned_at=T0 + 5)
        job = finish(table, "a", worker=1, started=T0 + 7)
        self.assertEqual((job.assigned_worker, job.executed_by, job.started_at_ms), (1, 1, T0 + 7))
        never_started = finish(table, "b", status=JobStatus.FAILED, exit_code=None, started=None)
        self.assertEqual((never_started.executed_by, never_started.started_at_ms), (1, None))

    def test_only_the_assigned_worker_can_finish_an_attempt(self):
        """A result in another node's name changes nothing (a confused or forged worker)."""
        table = JobTable()
        running_job(table, "a", worker=1)
        before = table.snapshot()
        self.assertIsNone(finish(table, "a", worker=2))
        self.assertEqual(table.snapshot(), before)
        self.assertEqual(finish(table, "a", worker=1).status, JobStatus.COMPLETED)

    def test_snapshot_keeps_the_assignment_worker_and_start(self):
        table = JobTable()
        submit(table, "a")
        assign(table, "a", worker=3, assigned_at=T0 + 5)
        restored = JobTable()
        restored.restore(table.snapshot())
        job = restored.get("a")
        self.assertEqual((job.executed_by, job.started_at_ms), (3, T0 + 5))
        self.assertEqual(restored.snapshot(), table.snapshot())

    def check_assign_ignored_unless_pending(self, state):
        """Assigning a job that is not pending changes nothing."""
        table = JobTable()
        running_job(table, "a", worker=1)
        if state == "completed":
            finish(table, "a")
        elif state == "failed":
            finish(table, "a", status=JobStatus.FAILED, exit_code=1)
        elif state == "cancelled":
            cancel(table, "a")
        before = table.snapshot()
        self.assertIsNone(assign(table, "a", worker=2, attempt=2))
        self.assertEqual(table.snapshot(), before)

    def test_assign_unknown_job_or_no_worker_ignored(self):
        table = JobTable()
        submit(table, "a")
        before = table.snapshot()
        self.assertIsNone(assign(table, "nope"))
        self.assertIsNone(assign(table, "a", worker=0))
        self.assertEqual(table.snapshot(), before)


add_cases(
    AssignTests,
    "test_assign_ignored_unless_pending",
    {state: state for state in ("running", "completed", "failed", "cancelled")},
    AssignTests.check_assign_ignored_unless_pending,
)


class UpdateTests(unittest.TestCase):
    """Results (in batch_update_job_status entries): only the running attempt's lands."""

    def test_update_completes_running_job_with_result(self):
        table = JobTable()
        running_job(table, "a", worker=2)
        job = finish(
            table, "a", worker=2, exit_code=0, output="hello\n", error="warn", truncated=True
        )
        self.assertIs(job.status, JobStatus.COMPLETED)
        self.assertEqual(job.executed_by, 2)
        self.assertEqual(job.exit_code, 0)
        self.assertEqual((job.started_at_ms, job.completed_at_ms), (T0 + 10, T0 + 20))
        self.assertEqual((job.output, job.error, job.output_truncated), ("hello\n", "warn", True))
        self.assertEqual(table.get("a"), job)

    def test_update_failed_without_exit_code_keeps_it_absent(self):
        table = JobTable()
        running_job(table, "a")
        job = finish(
            table,
            "a",
            status=JobStatus.FAILED,
            exit_code=None,
            started=None,
            error="Timed out after 30s",
        )
        self.assertIs(job.status, JobStatus.FAILED)
        self.assertIsNone(job.exit_code)
        self.assertIsNone(job.started_at_ms)
        self.assertEqual(job.error, "Timed out after 30s")

    def test_update_failed_keeps_nonzero_exit_code(self):
        table = JobTable()
        running_job(table, "a")
        self.assertEqual(finish(table, "a", status=JobStatus.FAILED, exit_code=3).exit_code, 3)

    def check_update_ignored_unless_running(self, state):
        """A result for a job that is not running changes nothing."""
        table = JobTable()
        submit(table, "a")
        if state != "pending":
            assign(table, "a")
        if state == "completed":
            finish(table, "a", output="first")
        elif state == "failed":
            finish(table, "a", status=JobStatus.FAILED, exit_code=1)
        elif state == "cancelled":
            cancel(table, "a")
        before = table.snapshot()
        self.assertIsNone(finish(table, "a", output="second", exit_code=0))
        self.assertEqual(table.snapshot(), before)

    def test_update_unknown_job_ignored(self):
        self.assertIsNone(finish(JobTable(), "nope"))

    def test_update_with_stale_attempt_ignored(self):
        table = JobTable()
        submit(table, "a")
        assign(table, "a", attempt=2)
        self.assertIsNone(finish(table, "a", attempt=1))
        self.assertIsNone(finish(table, "a", attempt=3))
        self.assertIs(table.get("a").status, JobStatus.RUNNING)
        self.assertIs(finish(table, "a", attempt=2).status, JobStatus.COMPLETED)

    def test_update_without_attempt_accepted(self):
        table = JobTable()
        submit(table, "a")
        assign(table, "a", attempt=2)
        self.assertIs(finish(table, "a", attempt=0).status, JobStatus.COMPLETED)

    def check_update_to_non_result_status_ignored(self, status):
        """An update to a status that is no result is ignored."""
        table = JobTable()
        running_job(table, "a")
        update = scheduler_pb2.UpdateJobStatusCommand(
            job_id="a", status=int(status), executed_by=1, attempt=1
        )
        self.assertEqual(apply(table, commands.batch_update([update])), [None])
        self.assertIs(table.get("a").status, JobStatus.RUNNING)

    def test_single_update_entry_still_applies(self):
        """A lone UpdateJobStatus entry (no builder makes one any more; older logs hold
        them) lands like a batch of one."""
        table = JobTable()
        running_job(table, "a", worker=2)
        update = commands.status_update("a", result(exit_code=4), 2, 1)
        entry = scheduler_pb2.Command(update_job_status=update).SerializeToString()
        job = apply(table, entry)
        self.assertEqual((job.status, job.exit_code, job.executed_by), (JobStatus.COMPLETED, 4, 2))
        self.assertEqual(table.get("a"), job)

    def test_batch_update_applies_each_and_reports_each(self):
        table = JobTable()
        running_job(table, "a")
        running_job(table, "b")
        submit(table, "c")
        batch = commands.batch_update(
            [
                commands.status_update("a", result(), 1, 1),
                commands.status_update("c", result(), 1, 1),
                commands.status_update("b", result(status=JobStatus.FAILED, exit_code=2), 1, 1),
                commands.status_update("a", result(output="dup"), 1, 1),
            ]
        )
        outcome = apply(table, batch)
        self.assertEqual(
            [job and job.status for job in outcome],
            [JobStatus.COMPLETED, None, JobStatus.FAILED, None],
        )
        self.assertEqual(table.get("a").output, "out")
        self.assertEqual(table.get("b").exit_code, 2)
        self.assertIs(table.get("c").status, JobStatus.PENDING)


add_cases(
    UpdateTests,
    "test_update_ignored_unless_running",
    {state: state for state in ("pending", "completed", "failed", "cancelled")},
    UpdateTests.check_update_ignored_unless_running,
)
add_cases(
    UpdateTests,
    "test_update_to_non_result_status_ignored",
    {
        "pending": JobStatus.PENDING,
        "running": JobStatus.RUNNING,
        "cancelled": JobStatus.CANCELLED,
        "unspecified": 0,
    },
    UpdateTests.check_update_to_non_result_status_ignored,
)


class CancelTests(unittest.TestCase):
    """cancel_job: pending and running jobs end as cancelled."""

    def test_cancel_pending_job(self):
        table = JobTable()
        submit(table, "a")
        job = cancel(table, "a", at=T0 + 50)
        self.assertIs(job.status, JobStatus.CANCELLED)
        self.assertEqual(job.completed_at_ms, T0 + 50)
        self.assertEqual(table.active_count(), 0)

    def test_cancel_running_job(self):
        table = JobTable()
        running_job(table, "a", worker=4)
        job = cancel(table, "a", at=T0 + 60)
        self.assertEqual(
            (job.status, job.completed_at_ms, job.assigned_worker),
            (JobStatus.CANCELLED, T0 + 60, 4),
        )
        self.assertEqual(table.jobs_running_on(4), [])

    def check_cancel_terminal_job_returns_it_unchanged(self, state):
        """Cancelling a finished job returns it as it was."""
        table = JobTable()
        running_job(table, "a")
        if state == "completed":
            finish(table, "a")
        elif state == "failed":
            finish(table, "a", status=JobStatus.FAILED, exit_code=1)
        else:
            cancel(table, "a", at=T0 + 1)
        before = table.snapshot()
        job = cancel(table, "a", at=T0 + 500)
        self.assertEqual(job.status.label, state)
        self.assertNotEqual(job.completed_at_ms, T0 + 500)
        self.assertEqual(table.snapshot(), before)

    def test_cancel_unknown_job(self):
        self.assertIsNone(cancel(JobTable(), "nope"))

    def test_cancelled_job_ignores_late_result(self):
        table = JobTable()
        running_job(table, "a")
        cancel(table, "a")
        self.assertIsNone(finish(table, "a"))
        self.assertIs(table.get("a").status, JobStatus.CANCELLED)


add_cases(
    CancelTests,
    "test_cancel_terminal_job_returns_it_unchanged",
    {state: state for state in ("completed", "failed", "cancelled")},
    CancelTests.check_cancel_terminal_job_returns_it_unchanged,
)


class WorkerRegistrationTests(unittest.TestCase):
    """register_worker: the known worker ids."""

    def test_register_worker_records_ids(self):
        table = JobTable()
        for worker in (3, 1, 3, 0):
            self.assertIsNone(apply(table, commands.register_worker(worker)))
        self.assertEqual(table.workers(), [1, 3])


class EntryFormsTests(unittest.TestCase):
    """entry_forms: the Raft entry forms the cluster writes, raised by an entry, kept
    in snapshots, never lowered."""

    def test_forms_start_at_one_and_are_never_lowered(self):
        table = JobTable()
        self.assertEqual(table.entry_forms(), 1)
        self.assertIsNone(apply(table, commands.entry_forms(2)))
        apply(table, commands.entry_forms(1))
        self.assertEqual(table.entry_forms(), 2)

    def test_a_snapshot_keeps_the_forms_and_an_older_one_means_one(self):
        table = JobTable()
        apply(table, commands.entry_forms(2))
        restored = JobTable()
        restored.restore(table.snapshot())
        self.assertEqual(restored.entry_forms(), 2)
        older = json.loads(table.snapshot())
        del older["entry_forms"]  # taken by a version from before forms were counted
        restored.restore(json.dumps(older).encode())
        self.assertEqual(restored.entry_forms(), 1)


class ListenerTests(unittest.TestCase):
    """Listeners see each applied change; results are copies."""

    def test_listeners_see_each_change_after_it_is_applied(self):
        table = JobTable()
        seen = []
        table.add_listener(lambda event, job: seen.append((event, job.job_id, job.status)))
        submit(table, "a")
        submit(table, "a")  # duplicate: no event
        assign(table, "a")
        assign(table, "a")  # ignored: no event
        finish(table, "a")
        submit(table, "b")
        cancel(table, "b")
        cancel(table, "b")  # terminal: no event
        apply(table, commands.register_worker(1))
        self.assertEqual(
            seen,
            [
                ("submitted", "a", JobStatus.PENDING),
                ("assigned", "a", JobStatus.RUNNING),
                ("finished", "a", JobStatus.COMPLETED),
                ("submitted", "b", JobStatus.PENDING),
                ("cancelled", "b", JobStatus.CANCELLED),
            ],
        )

    def test_failing_listener_neither_breaks_apply_nor_other_listeners(self):
        table = JobTable()
        seen = []

        def broken(event, job):
            raise RuntimeError("boom")

        table.add_listener(broken)
        table.add_listener(lambda event, job: seen.append(event))
        self.assertEqual(submit(table, "a").job_id, "a")
        self.assertEqual(seen, ["submitted"])
        # the table logs the listener's failure (trial fails a test on an unflushed one)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_results_are_copies_not_the_table_records(self):
        table = JobTable()
        job = submit(table, "a")
        job.status = JobStatus.FAILED
        table.get("a").command = "changed"
        table.pending_jobs()[0].output = "x"
        self.assertEqual(table.get("a"), Job(job_id="a", command="echo hi", created_at_ms=T0))


class QueryTests(unittest.TestCase):
    """Counts, FIFO order and jobs per worker."""

    def test_counts_fifo_and_running_queries(self):
        table = JobTable()
        for name in "abcdef":
            submit(table, name)
        assign(table, "b", worker=1)
        assign(table, "d", worker=2)
        assign(table, "e", worker=1)
        finish(table, "e")
        cancel(table, "f")
        self.assertEqual(table.active_count(), 4)
        self.assertEqual(table.count(JobStatus.PENDING), 2)
        self.assertEqual(ids(table.pending_jobs()), ["a", "c"])
        self.assertEqual(ids(table.pending_jobs(limit=1)), ["a"])
        self.assertEqual(ids(table.jobs_running_on(1)), ["b"])
        self.assertEqual(ids(table.jobs_running_on(2)), ["d"])
        self.assertEqual(table.jobs_running_on(3), [])
        self.assertEqual(table.running_counts(), {1: 1, 2: 1})


def build_mixed_table(entry_forms: int = commands.ENTRY_FORMS):
    """a..h with varied status, workers, commands and times, in a cluster that writes
    `entry_forms` (today's by default: its snapshots are of SNAPSHOT_FORMAT)."""
    table = JobTable()
    if entry_forms > 1:
        apply(table, commands.entry_forms(entry_forms))
    specs = [
        ("a", "echo Hello", 100),
        ("b", "sleep 5", 200),
        ("c", "ECHO hello", 300),
        ("d", "ls", 400),
        ("e", "echo bye", 500),
        ("f", "sleep 1", 600),
        ("g", "echo HELLO world", 700),
        ("h", "true", 800),
    ]
    for job_id, command, created in specs:
        submit(table, job_id, created=created, command=command)
    assign(table, "a", worker=1)
    finish(table, "a", worker=1)
    assign(table, "b", worker=2)
    assign(table, "c", worker=3)
    finish(table, "c", worker=3, status=JobStatus.FAILED, exit_code=1)
    cancel(table, "d")
    assign(table, "g", worker=1)
    return table


def listed(table, **filters):
    return ids(table.list_jobs(ListQuery(page_size=1000, **filters)).jobs)


def submit_many(table, count, start=0, command="job"):
    for n in range(start, start + count):
        submit(table, f"j{n:05d}", created=T0 + n, command=f"{command} {n}")


def flip_char(token, position):
    replacement = "A" if token[position] != "A" else "B"
    return token[:position] + replacement + token[position + 1 :]


class PagingTestCase(unittest.TestCase):
    """Helpers for tests that read list_jobs page by page."""

    def token_for(self, table, **filters):
        """The token of the second page of 5 (the table must hold more than 5 matches)."""
        token = table.list_jobs(ListQuery(page_size=5, **filters)).next_page_token
        self.assertTrue(token)
        return token

    def read_all_pages(self, table, query, between=None):
        """Every job id listed page by page, and the number of pages; between(pages)
        runs after each page but the last."""
        seen, token, pages = [], "", 0
        while True:
            page = table.list_jobs(ListQuery(**{**query, "page_token": token}))
            seen.extend(ids(page.jobs))
            pages += 1
            token = page.next_page_token
            if not token:
                return seen, pages
            self.assertLess(pages, 1000, "paging never ends")
            if between:
                between(pages)


class ListFilterTests(unittest.TestCase):
    """list_jobs: creation order and each filter."""

    def test_list_all_in_creation_order(self):
        page = build_mixed_table().list_jobs(ListQuery())
        self.assertEqual(ids(page.jobs), list("abcdefgh"))
        self.assertEqual(page.total_count, 8)
        self.assertEqual(page.next_page_token, "")

    def test_list_filter_status(self):
        table = build_mixed_table()
        self.assertEqual(listed(table, status=JobStatus.PENDING), ["e", "f", "h"])
        self.assertEqual(listed(table, status=JobStatus.RUNNING), ["b", "g"])
        self.assertEqual(listed(table, status=JobStatus.COMPLETED), ["a"])
        self.assertEqual(listed(table, status=JobStatus.FAILED), ["c"])
        self.assertEqual(listed(table, status=JobStatus.CANCELLED), ["d"])

    def test_list_filter_worker_matches_assigned_or_executed_by(self):
        table = build_mixed_table()
        self.assertEqual(listed(table, worker_id=1), ["a", "g"])
        self.assertEqual(listed(table, worker_id=2), ["b"])
        self.assertEqual(listed(table, worker_id=3), ["c"])
        self.assertEqual(listed(table, worker_id=9), [])

    def test_list_filter_command_case_insensitive(self):
        table = build_mixed_table()
        self.assertEqual(listed(table, command_substring="HeLLo"), ["a", "c", "g"])
        self.assertEqual(listed(table, command_substring="sleep"), ["b", "f"])

    def test_list_filter_created_bounds_inclusive(self):
        table = build_mixed_table()
        self.assertEqual(listed(table, created_after_ms=300), list("cdefgh"))
        self.assertEqual(listed(table, created_before_ms=300), ["a", "b", "c"])
        self.assertEqual(
            listed(table, created_after_ms=300, created_before_ms=500), ["c", "d", "e"]
        )

    def test_list_filters_combine_with_and(self):
        table = build_mixed_table()
        self.assertEqual(listed(table, command_substring="echo", worker_id=1), ["a", "g"])
        self.assertEqual(
            listed(table, command_substring="echo", worker_id=1, status=JobStatus.RUNNING), ["g"]
        )
        self.assertEqual(
            listed(table, command_substring="echo", created_after_ms=200, created_before_ms=600),
            ["c", "e"],
        )
        page = table.list_jobs(ListQuery(page_size=1, command_substring="echo"))
        self.assertEqual(ids(page.jobs), ["a"])
        self.assertEqual(page.total_count, 4)

    def test_empty_table_lists_nothing(self):
        page = JobTable().list_jobs(ListQuery(command_substring="x"))
        self.assertEqual((page.jobs, page.next_page_token, page.total_count), ([], "", 0))


class PagingTests(PagingTestCase):
    """list_jobs: page sizes, and pages that never skip or repeat a job."""

    def check_page_size_clamped(self, case):
        """The page size asked for is clamped to 1..1000; 0 means 100."""
        page_size, expected = case
        table = JobTable()
        submit_many(table, 1200)
        page = table.list_jobs(ListQuery(page_size=page_size))
        self.assertEqual(len(page.jobs), expected)
        self.assertEqual(page.total_count, 1200)

    def test_page_size_clamped_with_filter(self):
        table = JobTable()
        submit_many(table, 1200)
        self.assertEqual(
            len(table.list_jobs(ListQuery(page_size=0, command_substring="job")).jobs), 100
        )
        self.assertEqual(
            len(table.list_jobs(ListQuery(page_size=5000, command_substring="job")).jobs), 1000
        )

    def check_paging_with_jobs_added_between_pages_never_skips_or_repeats(self, filters):
        """Jobs submitted while a client pages through the list neither hide nor repeat
        the jobs already there."""
        table = JobTable()
        submit_many(table, 2500)
        original = [f"j{n:05d}" for n in range(2500)]
        added = itertools.count(2500)

        def add_jobs(_):
            for _ in range(7):
                n = next(added)
                submit(table, f"j{n:05d}", created=T0 + n, command=f"job {n}")

        seen, pages = self.read_all_pages(table, {"page_size": 100, **filters}, add_jobs)
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(seen[:2500], original)
        self.assertEqual(seen, sorted(seen))
        self.assertGreaterEqual(pages, 25)

    def test_paging_over_filtered_set_when_jobs_change_status(self):
        table = JobTable()
        submit_many(table, 300)
        seen, _ = self.read_all_pages(
            table,
            {"page_size": 64, "status": JobStatus.PENDING},
            lambda page: assign(table, f"j{page * 64 - 1:05d}"),
        )
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(seen, sorted(seen))

    def test_last_page_has_no_token_and_exact_fit_has_no_extra_page(self):
        table = JobTable()
        submit_many(table, 200)
        first = table.list_jobs(ListQuery(page_size=100))
        second = table.list_jobs(ListQuery(page_size=100, page_token=first.next_page_token))
        self.assertTrue(first.next_page_token)
        self.assertFalse(second.next_page_token)
        self.assertEqual(len(second.jobs), 100)

    def test_page_size_may_change_between_pages(self):
        table = JobTable()
        submit_many(table, 30)
        first = table.list_jobs(ListQuery(page_size=10))
        rest = table.list_jobs(ListQuery(page_size=100, page_token=first.next_page_token))
        self.assertEqual(ids(first.jobs + rest.jobs), [f"j{n:05d}" for n in range(30)])


add_cases(
    PagingTests,
    "test_page_size_clamped",
    {
        "zero_gives_100": (0, 100),
        "one_gives_1": (1, 1),
        "1000_gives_1000": (1000, 1000),
        "1001_gives_1000": (1001, 1000),
        "50000_gives_1000": (50000, 1000),
    },
    PagingTests.check_page_size_clamped,
)
add_cases(
    PagingTests,
    "test_paging_with_jobs_added_between_pages_never_skips_or_repeats",
    {
        "unfiltered": {},
        "command_substring": {"command_substring": "JOB"},
        "status": {"status": JobStatus.PENDING},
    },
    PagingTests.check_paging_with_jobs_added_between_pages_never_skips_or_repeats,
)


class PageTokenTests(PagingTestCase):
    """Page tokens: garbled or reused with other filters, they are refused."""

    def check_garbled_page_token_rejected(self, make_token):
        """A token altered in any way is refused as invalid."""
        table = JobTable()
        submit_many(table, 20)
        bad = make_token(self.token_for(table))
        with self.assertRaises(InvalidArgument) as caught:
            table.list_jobs(ListQuery(page_size=5, page_token=bad))
        self.assertEqual(caught.exception.message, "Invalid page token")

    def check_token_used_with_other_filters_rejected(self, other):
        """A token is only good with the filters of the list it came from."""
        table = JobTable()
        submit_many(table, 20)
        token = self.token_for(table)
        with self.assertRaises(InvalidArgument) as caught:
            table.list_jobs(ListQuery(page_size=5, page_token=token, **other))
        self.assertRegex(str(caught.exception), "Invalid page token")

    def test_token_of_filtered_list_rejected_without_filters(self):
        table = JobTable()
        submit_many(table, 20)
        token = self.token_for(table, command_substring="job")
        with self.assertRaises(InvalidArgument) as caught:
            table.list_jobs(ListQuery(page_token=token))
        self.assertRegex(str(caught.exception), "Invalid page token")
        # same filters, differently cased substring: same result set, token accepted
        page = table.list_jobs(ListQuery(page_size=5, page_token=token, command_substring="JOB"))
        self.assertEqual(ids(page.jobs)[0], "j00005")

    def test_token_from_another_node_with_same_log_works(self):
        first, second = JobTable(), JobTable()
        submit_many(first, 20)
        submit_many(second, 20)
        token = self.token_for(first, status=JobStatus.PENDING)
        page = second.list_jobs(ListQuery(page_size=5, status=JobStatus.PENDING, page_token=token))
        self.assertEqual(ids(page.jobs), [f"j{n:05d}" for n in range(5, 10)])


add_cases(
    PageTokenTests,
    "test_garbled_page_token_rejected",
    {
        "word": lambda token: "garbage",
        "not_base64": lambda token: "!!!!",
        "non_ascii": lambda token: "é" * 10,
        "last_character_dropped": lambda token: token[:-1],
        "character_appended": lambda token: token + "A",
        "padding_appended": lambda token: token + "==",
        "last_character_plus": lambda token: token[:-1] + "+",
        "last_character_slash": lambda token: token[:-1] + "/",
        "character_flipped_near_start": lambda token: flip_char(token, 5),
        "character_flipped_near_end": lambda token: flip_char(token, len(token) - 3),
        "leading_space": lambda token: " " + token,
        "made_up_base64": lambda token: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    },
    PageTokenTests.check_garbled_page_token_rejected,
)
add_cases(
    PageTokenTests,
    "test_token_used_with_other_filters_rejected",
    {
        "status": {"status": JobStatus.PENDING},
        "worker_id": {"worker_id": 1},
        "command_substring": {"command_substring": "job 1"},
        "created_after_ms": {"created_after_ms": T0 + 1},
        "created_before_ms": {"created_before_ms": T0 + 100},
    },
    PageTokenTests.check_token_used_with_other_filters_rejected,
)


class SnapshotTests(PagingTestCase):
    """snapshot/restore: byte-identical, deterministic, all or nothing."""

    def test_a_cluster_of_older_entry_forms_writes_format_1_as_older_versions_read_it(self):
        """Until every node applies entry forms 2, a node of a version from before
        snapshot format 2 may have to install this table: each job an object of the
        Job fields and its seq, and nothing else in the snapshot."""
        table = build_mixed_table(entry_forms=1)
        state = json.loads(table.snapshot())
        self.assertEqual(
            sorted(state), ["format", "idempotency_keys", "jobs", "next_seq", "workers"]
        )
        self.assertEqual(state["format"], 1)
        job_fields = sorted([*(field.name for field in dataclasses.fields(Job)), "seq"])
        self.assertEqual([sorted(job) for job in state["jobs"]], [job_fields] * len(table))
        restored = JobTable()
        restored.restore(table.snapshot())
        for job_id in "abcdefgh":
            self.assertEqual(restored.get(job_id), table.get(job_id))
        self.assertEqual(restored.snapshot(), table.snapshot())

    def test_snapshots_are_of_format_2_once_the_cluster_writes_entry_forms_2(self):
        table = build_mixed_table(entry_forms=1)
        self.assertEqual(json.loads(table.snapshot())["format"], 1)
        apply(table, commands.entry_forms(2))
        self.assertEqual(json.loads(table.snapshot())["format"], 2)
        self.assertEqual(table.snapshot(), build_mixed_table().snapshot())

    def test_a_format_1_snapshot_of_an_older_node_restores_the_same_table(self):
        table = build_mixed_table()
        older = json.dumps(as_format_1(table.snapshot())).encode()
        restored = JobTable()
        restored.restore(older)
        self.assertEqual(restored.snapshot(), table.snapshot())
        self.assertLess(len(table.snapshot()), len(older) * 0.7)  # arrays, not objects

    def test_the_snapshot_after_a_restore_encodes_no_job_again(self):
        """A restored table keeps each job's record as the snapshot had it: the first
        compaction after a restore does not re-encode the whole table (a stall)."""
        table = build_mixed_table()
        data = table.snapshot()
        restored = JobTable()
        restored.restore(data)
        encoded = []
        original = table_module._snapshot_record
        self.patch(
            table_module, "_snapshot_record", lambda *args: encoded.append(1) or original(*args)
        )
        self.assertEqual(restored.snapshot(), data)
        self.assertEqual(encoded, [])
        apply(restored, commands.cancel_job("e", T0 + 5))  # a change re-encodes that job
        self.assertNotEqual(restored.snapshot(), data)
        self.assertEqual(len(encoded), 1)
        older = JobTable()
        older.restore(json.dumps(as_format_1(data)).encode())  # records made anew
        self.assertEqual(older.snapshot(), data)

    def test_a_record_of_the_wrong_length_is_refused(self):
        state = json.loads(build_mixed_table().snapshot())
        self.assertEqual(state["format"], 2)
        state["jobs"][0] = state["jobs"][0][:-1]
        table = JobTable()
        with self.assertRaises(ValueError):
            table.restore(json.dumps(state).encode())
        self.assertEqual(len(table), 0)

    def test_a_record_that_is_no_job_is_refused(self):
        fields = json.loads(build_mixed_table().snapshot())["fields"]
        status_at, history_at = fields.index("status"), fields.index("attempt_history")

        def spoil_status(job):
            job[status_at] = 99

        def spoil_outcome(job):
            job[history_at][0][-2] = "vanished"

        def spoil_attempt_length(job):
            job[history_at][0].pop()

        for spoil in (spoil_status, spoil_outcome, spoil_attempt_length):
            state = json.loads(build_mixed_table().snapshot())
            spoil(state["jobs"][0])  # job a: finished, one attempt
            self.check_restore_rejects_bad_data_and_keeps_state(json.dumps(state).encode())

    def test_snapshot_restore_round_trip(self):
        table = build_mixed_table()
        submit(table, "k", key="key-1", created=900, image="busybox", timeout_seconds=9)
        apply(table, commands.register_worker(2))
        apply(table, commands.register_worker(1))
        data = table.snapshot()

        restored = JobTable()
        submit(restored, "stale")
        restored.restore(data)
        self.assertEqual(restored.snapshot(), data)
        self.assertIsNone(restored.get("stale"))
        for job_id in "abcdefghk":
            self.assertEqual(restored.get(job_id), table.get(job_id))
        self.assertEqual(listed(restored), listed(table))
        self.assertEqual(restored.workers(), [1, 2])
        self.assertEqual(restored.pending_jobs(), table.pending_jobs())
        self.assertEqual(restored.running_counts(), table.running_counts())
        # idempotency keys and sequence numbers survive
        self.assertEqual(submit(restored, "z", key="key-1", created=950).job_id, "k")
        for replica in (table, restored):
            submit(replica, "next", created=1000)
        self.assertEqual(restored.snapshot(), table.snapshot())
        token = self.token_for(table)
        self.assertEqual(
            ids(restored.list_jobs(ListQuery(page_size=5, page_token=token)).jobs),
            ids(table.list_jobs(ListQuery(page_size=5, page_token=token)).jobs),
        )

    def test_snapshot_keeps_output_and_optional_fields(self):
        table = JobTable()
        running_job(table, "a")
        finish(table, "a", output="ünïcode\n", error="e", exit_code=0, truncated=True)
        running_job(table, "b")
        finish(table, "b", status=JobStatus.FAILED, exit_code=None, started=None)
        restored = JobTable()
        restored.restore(table.snapshot())
        self.assertEqual(restored.get("a"), table.get("a"))
        self.assertEqual(restored.get("a").exit_code, 0)
        self.assertIsNone(restored.get("b").exit_code)

    def test_snapshot_is_deterministic_across_replicas(self):
        """Same log, whether applied entry by entry or through a snapshot: same bytes."""
        direct = build_mixed_table()
        via_snapshot = JobTable()
        via_snapshot.restore(build_mixed_table().snapshot())
        for table in (direct, via_snapshot):
            submit(table, "x", key="k", created=1000)
            assign(table, "x", worker=5)
        self.assertEqual(direct.snapshot(), via_snapshot.snapshot())
        self.assertNotEqual(direct.snapshot(), build_mixed_table().snapshot())

    def test_restore_notifies_listeners_and_keeps_them(self):
        table = JobTable()
        seen = []
        table.add_listener(lambda event, job: seen.append((event, job)))
        table.restore(build_mixed_table().snapshot())
        submit(table, "new")
        self.assertEqual(seen[0], ("restored", None))
        self.assertEqual(seen[1][0], "submitted")

    def check_restore_rejects_bad_data_and_keeps_state(self, data):
        """Data that is no snapshot is refused and the table stays as it was."""
        table = build_mixed_table()
        before = table.snapshot()
        with self.assertRaises(ValueError):
            table.restore(data)
        self.assertEqual(table.snapshot(), before)

    def test_restore_rejects_out_of_order_sequences(self):
        state = as_format_1(build_mixed_table().snapshot())
        state["jobs"][0], state["jobs"][1] = state["jobs"][1], state["jobs"][0]
        with self.assertRaises(ValueError):
            JobTable().restore(json.dumps(state).encode())


add_cases(
    SnapshotTests,
    "test_restore_rejects_bad_data_and_keeps_state",
    {
        "empty": b"",
        "not_json": b"not json",
        "not_utf8": b"\xff\xfe",
        "json_list": b"[]",
        "unknown_format": b'{"format": 99}',
        "job_seq_not_below_next_seq": (
            b'{"format": 1, "next_seq": 3, "jobs": [{"seq": 5}],'
            b' "idempotency_keys": [], "workers": []}'
        ),
    },
    SnapshotTests.check_restore_rejects_bad_data_and_keeps_state,
)


def requeue(table, job_id, attempt=1, error="worker 1 lost", at=T0 + 500):
    return apply(table, commands.requeue_job(job_id, attempt, error, at))


ASSIGNED_AT = T0 + 100


def running_attempt(table, job_id, max_attempts=3, attempt=1, worker=1, incarnation=77):
    """`job_id` running attempt `attempt` on `worker`, assigned at ASSIGNED_AT."""
    submit(table, job_id, max_attempts=max_attempts)
    if attempt > 1:  # earlier attempts lost and requeued
        for earlier in range(1, attempt):
            apply(table, commands.assign_job(job_id, 9, earlier))
            requeue(table, job_id, attempt=earlier)
    apply(table, commands.assign_job(job_id, worker, attempt, incarnation, ASSIGNED_AT))


class RequeueTests(unittest.TestCase):
    """requeue_job: a lost attempt runs again or fails the job."""

    def test_requeue_with_attempts_left_makes_the_job_pending_again(self):
        table = JobTable()
        running_attempt(table, "a", max_attempts=3)
        seen = []
        table.add_listener(lambda event, job: seen.append((event, job.job_id)))
        job = requeue(table, "a")
        self.assertIsNotNone(job)
        self.assertIs(job.status, JobStatus.PENDING)
        stored = table.get("a")
        self.assertIs(stored.status, JobStatus.PENDING)
        self.assertEqual((stored.assigned_worker, stored.worker_incarnation), (0, 0))
        # the lost attempt's worker and start are forgotten with it
        self.assertEqual((stored.executed_by, stored.started_at_ms), (0, None))
        self.assertEqual(job, stored)
        self.assertEqual(stored.attempts, 1)  # kept: the next assignment is attempt 2
        self.assertEqual((stored.error, stored.completed_at_ms), ("", None))
        self.assertEqual(seen, [("requeued", "a")])
        self.assertEqual(ids(table.pending_jobs()), ["a"])
        self.assertEqual(table.running_by_worker(), {})

    def test_requeued_job_keeps_its_fifo_place_and_runs_attempt_two(self):
        table = JobTable()
        running_attempt(table, "a")
        submit(table, "b")
        requeue(table, "a")
        self.assertEqual(ids(table.pending_jobs()), ["a", "b"])
        apply(table, commands.assign_job("a", 2, 2, 88))
        finish(table, "a", worker=1, attempt=1)  # the lost attempt's late result
        self.assertIs(table.get("a").status, JobStatus.RUNNING)
        finish(table, "a", worker=2, attempt=2)
        job = table.get("a")
        self.assertEqual((job.status, job.executed_by, job.attempts), (JobStatus.COMPLETED, 2, 2))

    def test_requeue_of_the_last_attempt_fails_the_job(self):
        table = JobTable()
        running_attempt(table, "a", max_attempts=2, attempt=2)
        seen = []
        table.add_listener(lambda event, job: seen.append(event))
        job = requeue(table, "a", attempt=2, error="worker 1 lost", at=T0 + 700)
        self.assertIs(job.status, JobStatus.FAILED)
        stored = table.get("a")
        self.assertEqual(
            (stored.status, stored.error, stored.exit_code),
            (JobStatus.FAILED, "worker 1 lost", None),
        )
        self.assertEqual(stored.completed_at_ms, T0 + 700)
        self.assertEqual(stored.attempts, 2)
        # the failed attempt still shows where and since when it ran
        self.assertEqual((stored.executed_by, stored.started_at_ms), (1, ASSIGNED_AT))
        self.assertEqual(seen, ["finished"])
        self.assertEqual(table.count(JobStatus.FAILED), 1)
        self.assertEqual(table.active_count(), 0)

    def test_requeue_with_max_attempts_one_fails_at_once(self):
        table = JobTable()
        running_attempt(table, "a", max_attempts=1)
        self.assertIs(requeue(table, "a").status, JobStatus.FAILED)

    def test_requeue_with_stale_attempt_ignored(self):
        table = JobTable()
        running_attempt(table, "a", attempt=2)
        before = table.snapshot()
        self.assertIsNone(requeue(table, "a", attempt=1))
        self.assertEqual(table.snapshot(), before)

    def check_requeue_ignored_unless_running(self, state):
        """Requeueing a job that is not running changes nothing."""
        table = JobTable()
        submit(table, "a", max_attempts=3)
        if state in ("completed", "failed"):
            assign(table, "a")
            status = JobStatus[state.upper()]
            finish(table, "a", status=status, exit_code=int(status is JobStatus.FAILED))
        elif state == "cancelled":
            cancel(table, "a")
        before = table.snapshot()
        self.assertIsNone(requeue(table, "a", attempt=table.get("a").attempts))
        self.assertEqual(table.snapshot(), before)

    def test_requeue_unknown_job_ignored(self):
        table = JobTable()
        before = table.snapshot()
        self.assertIsNone(requeue(table, "nope"))
        self.assertEqual(table.snapshot(), before)

    def test_assign_records_worker_incarnation_and_snapshot_keeps_it(self):
        table = JobTable()
        running_attempt(table, "a", incarnation=2**62 + 5)
        self.assertEqual(table.get("a").worker_incarnation, 2**62 + 5)
        restored = JobTable()
        restored.restore(table.snapshot())
        self.assertEqual(restored.get("a").worker_incarnation, 2**62 + 5)
        self.assertEqual(restored.snapshot(), table.snapshot())

    def test_running_by_worker_groups_running_jobs(self):
        table = JobTable()
        running_attempt(table, "a", worker=1)
        running_attempt(table, "b", worker=2)
        running_attempt(table, "c", worker=1)
        submit(table, "d")
        grouped = table.running_by_worker()
        self.assertEqual(
            {worker: ids(jobs) for worker, jobs in grouped.items()}, {1: ["a", "c"], 2: ["b"]}
        )
        grouped[1][0].status = JobStatus.FAILED  # copies, not the table's records
        self.assertIs(table.get("a").status, JobStatus.RUNNING)

    def test_snapshot_after_a_requeue_shows_the_requeue(self):
        """A snapshot taken while the job ran must not leak into a later one."""
        table = JobTable()
        running_attempt(table, "a", incarnation=99)
        table.snapshot()
        requeue(table, "a")
        restored = JobTable()
        restored.restore(table.snapshot())
        job = restored.get("a")
        self.assertEqual(
            (job.status, job.assigned_worker, job.worker_incarnation, job.attempts),
            (JobStatus.PENDING, 0, 0, 1),
        )
        self.assertEqual((job.executed_by, job.started_at_ms), (0, None))


add_cases(
    RequeueTests,
    "test_requeue_ignored_unless_running",
    {state: state for state in ("pending", "completed", "failed", "cancelled")},
    RequeueTests.check_requeue_ignored_unless_running,
)


class NewestFirstTests(PagingTestCase):
    """list_jobs with newest_first: the dashboard's order, paged the same way."""

    def test_newest_first_reverses_creation_order_with_and_without_filters(self):
        table = build_mixed_table()
        self.assertEqual(listed(table, newest_first=True), list("hgfedcba"))
        self.assertEqual(
            listed(table, newest_first=True, status=JobStatus.PENDING), ["h", "f", "e"]
        )
        self.assertEqual(
            listed(table, newest_first=True, command_substring="echo"), ["g", "e", "c", "a"]
        )

    def test_pages_newest_first_never_skip_or_repeat_while_jobs_arrive(self):
        for filters in ({}, {"command_substring": "job"}):
            table = JobTable()
            submit_many(table, 23)
            query = {"page_size": 5, "newest_first": True, **filters}
            seen, pages = self.read_all_pages(
                table, query, between=lambda n, table=table: submit_many(table, 1, 100 + n)
            )
            self.assertEqual(seen, [f"j{n:05d}" for n in reversed(range(23))])
            self.assertEqual(pages, 5)

    def test_a_token_of_one_order_is_refused_by_the_other(self):
        table = JobTable()
        submit_many(table, 12)
        token = self.token_for(table, newest_first=True)
        with self.assertRaises(InvalidArgument):
            table.list_jobs(ListQuery(page_size=5, page_token=token))
        token = self.token_for(table)
        with self.assertRaises(InvalidArgument):
            table.list_jobs(ListQuery(page_size=5, page_token=token, newest_first=True))
