"""Command builders and the job -> wire message conversions."""

from __future__ import annotations

from twisted.trial import unittest

from jobsched._proto import scheduler_pb2
from jobsched.jobs import commands
from jobsched.jobs.model import Job, JobResult, JobStatus
from jobsched.jobs.table import JobTable
from jobsched.jobs.wire import job_to_job_info, job_to_status_response

T0 = 1_700_000_000_000


def decode(entry: bytes) -> scheduler_pb2.Command:
    """The Command in an entry: builders return the serialized bytes Raft replicates
    (and every node applies), so every field checked here has crossed the wire."""
    return scheduler_pb2.Command.FromString(entry)


def pending_job():
    return Job(job_id="id1", command="echo", created_at_ms=T0, image="alpine", timeout_seconds=30)


def finished_job(exit_code=0):
    return Job(
        job_id="id2",
        command="ls",
        created_at_ms=T0,
        image="busybox",
        timeout_seconds=10,
        status=JobStatus.COMPLETED,
        assigned_worker=1,
        executed_by=2,
        attempts=2,
        exit_code=exit_code,
        started_at_ms=T0 + 1,
        completed_at_ms=T0 + 9,
        output="o",
        error="e",
        output_truncated=True,
    )


class CommandBuilderTests(unittest.TestCase):
    """Each builder fills its command, and the command survives the wire."""

    def test_submit_job_sets_every_field(self):
        cmd = commands.submit_job(
            "id1",
            "echo",
            T0,
            image="alpine:3",
            timeout_seconds=5,
            idempotency_key="k",
            max_attempts=3,
        )
        submit = decode(cmd).submit_job
        self.assertEqual((submit.job_id, submit.command, submit.created_at_ms), ("id1", "echo", T0))
        self.assertTrue(submit.HasField("image"))
        self.assertEqual(submit.image, "alpine:3")
        self.assertEqual(
            (submit.timeout_seconds, submit.idempotency_key, submit.max_attempts), (5, "k", 3)
        )

    def test_submit_job_without_image_leaves_it_absent(self):
        self.assertFalse(
            decode(commands.submit_job("id1", "echo", T0)).submit_job.HasField("image")
        )

    def test_every_builder_returns_entry_bytes(self):
        done = JobResult(JobStatus.COMPLETED, 0, "", "", False, T0, T0 + 1)
        entries = {
            "submit_job": commands.submit_job("id1", "echo", T0),
            "assign_job": commands.assign_job("id1", 4, 1),
            "requeue_job": commands.requeue_job("id1", 1, "lost", T0),
            "batch_update_job_status": commands.batch_update(
                [commands.status_update("id1", done, 4, 1)]
            ),
            "cancel_job": commands.cancel_job("id1", T0),
            "register_worker": commands.register_worker(4),
        }
        for kind, entry in entries.items():
            self.assertIsInstance(entry, bytes, kind)
            self.assertTrue(entry, kind)  # never the empty no-op entry
            self.assertEqual(decode(entry).WhichOneof("command_type"), kind)

    def test_assign_cancel_register(self):
        assign = decode(commands.assign_job("id1", 4, 2)).assign_job
        self.assertEqual((assign.job_id, assign.worker_id, assign.attempt), ("id1", 4, 2))
        self.assertEqual((assign.worker_incarnation, assign.assigned_at_ms), (0, 0))
        assign = decode(commands.assign_job("id1", 4, 2, 2**62 + 1, T0)).assign_job
        self.assertEqual((assign.worker_incarnation, assign.assigned_at_ms), (2**62 + 1, T0))
        cancel = decode(commands.cancel_job("id1", T0)).cancel_job
        self.assertEqual((cancel.job_id, cancel.cancelled_at_ms), ("id1", T0))
        self.assertEqual(decode(commands.register_worker(9)).register_worker.worker_id, 9)

    def test_status_update_carries_result_with_presence(self):
        done = JobResult(JobStatus.COMPLETED, 0, "out", "err", True, T0, T0 + 5)
        update = commands.status_update("id1", done, executed_by=2, attempt=3)
        self.assertEqual(update.status, scheduler_pb2.JOB_STATUS_COMPLETED)
        self.assertTrue(update.HasField("exit_code"))
        self.assertEqual(update.exit_code, 0)
        self.assertTrue(update.HasField("started_at_ms"))
        self.assertEqual(update.started_at_ms, T0)
        self.assertEqual(update.completed_at_ms, T0 + 5)
        self.assertEqual(
            (update.output, update.error, update.output_truncated), ("out", "err", True)
        )
        self.assertEqual((update.executed_by, update.attempt), (2, 3))

        timed_out = JobResult(JobStatus.FAILED, None, "", "Timed out after 1s", False, None, T0)
        update = commands.status_update("id1", timed_out, executed_by=2, attempt=1)
        self.assertEqual(update.status, scheduler_pb2.JOB_STATUS_FAILED)
        self.assertFalse(update.HasField("exit_code"))
        self.assertFalse(update.HasField("started_at_ms"))

    def test_requeue_job_sets_every_field(self):
        requeue = decode(commands.requeue_job("id1", 2, "worker 3 lost", T0)).requeue_job
        self.assertEqual(
            (requeue.job_id, requeue.attempt, requeue.error, requeue.failed_at_ms),
            ("id1", 2, "worker 3 lost", T0),
        )

    def test_batch_update_keeps_every_field(self):
        results = [
            JobResult(JobStatus.COMPLETED, 0, "a", "", False, T0, T0 + 1),
            JobResult(JobStatus.FAILED, None, "", "lost", True, None, T0 + 2),
        ]
        updates = [commands.status_update(f"id{n}", r, n, n) for n, r in enumerate(results)]
        batch = decode(commands.batch_update(updates)).batch_update_job_status
        self.assertEqual(len(batch.updates), 2)
        for update, item in zip(updates, batch.updates, strict=False):
            self.assertIsInstance(item, scheduler_pb2.JobStatusUpdate)
            self.assertEqual(item.SerializeToString(), update.SerializeToString())
        self.assertTrue(batch.updates[0].HasField("exit_code"))
        self.assertFalse(batch.updates[1].HasField("exit_code"))

    def test_built_commands_drive_the_table(self):
        table = JobTable()
        table.apply(1, commands.submit_job("id1", "echo", T0))
        table.apply(2, commands.assign_job("id1", 3, 1))
        done = JobResult(JobStatus.COMPLETED, 0, "hi\n", "", False, T0 + 1, T0 + 2)
        update = commands.status_update("id1", done, 3, 1)
        job = table.apply(3, commands.batch_update([update]))[0]
        self.assertEqual(
            (job.status, job.exit_code, job.output, job.executed_by),
            (JobStatus.COMPLETED, 0, "hi\n", 3),
        )


class JobToWireTests(unittest.TestCase):
    """A job as JobInfo and as GetJobStatusResponse."""

    def test_job_info_of_pending_job_has_no_optional_fields(self):
        info = job_to_job_info(pending_job())
        self.assertEqual(
            (info.job_id, info.command, info.image, info.created_at_ms),
            ("id1", "echo", "alpine", T0),
        )
        self.assertEqual(info.status, scheduler_pb2.JOB_STATUS_PENDING)
        self.assertEqual((info.assigned_worker, info.executed_by), (0, 0))
        self.assertFalse(info.HasField("exit_code"))
        self.assertFalse(info.HasField("completed_at_ms"))

    def test_job_info_of_finished_job_keeps_exit_code_zero(self):
        info = job_to_job_info(finished_job(exit_code=0))
        self.assertEqual(info.status, scheduler_pb2.JOB_STATUS_COMPLETED)
        self.assertTrue(info.HasField("exit_code"))
        self.assertEqual(info.exit_code, 0)
        self.assertEqual(info.completed_at_ms, T0 + 9)
        self.assertEqual((info.assigned_worker, info.executed_by), (1, 2))

    def test_status_response_of_finished_job(self):
        response = job_to_status_response(finished_job(exit_code=5))
        self.assertEqual(response.status, scheduler_pb2.JOB_STATUS_COMPLETED)
        self.assertEqual(
            (response.output, response.error, response.output_truncated), ("o", "e", True)
        )
        self.assertEqual(response.exit_code, 5)
        self.assertEqual((response.started_at_ms, response.completed_at_ms), (T0 + 1, T0 + 9))
        self.assertEqual(
            (response.command, response.image, response.timeout_seconds), ("ls", "busybox", 10)
        )
        self.assertEqual(
            (response.attempts, response.assigned_worker, response.executed_by), (2, 1, 2)
        )

    def test_status_response_of_pending_job_has_no_optional_fields(self):
        response = job_to_status_response(pending_job())
        self.assertEqual(response.status, scheduler_pb2.JOB_STATUS_PENDING)
        for field in ("exit_code", "completed_at_ms", "started_at_ms"):
            self.assertFalse(response.HasField(field), field)
