"""The JSON objects of `-o json` carry exactly the keys of CLI.md, and a final job maps to
the exit code CLI.md gives it."""

from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli import views
from jobsched.cli.job_output import OutputChunk, OutputEnd, finished_output
from jobsched.cli.outcome import exit_code_of, timed_out
from tests.cli_contract import STATUS_EXT_KEYS, STATUS_KEYS


class JsonViewTests(unittest.TestCase):
    def test_status_keys_in_order_and_absent_values_are_null(self):
        view = views.job_status(
            pb.GetJobStatusResponse(job_id="j", status=pb.JOB_STATUS_PENDING, created_at_ms=5)
        )
        self.assertEqual(list(view), STATUS_KEYS + STATUS_EXT_KEYS)
        self.assertEqual(view["status"], "PENDING")
        for key in ("assigned_worker", "executed_by", "exit_code", "completed_at_ms", "image"):
            self.assertIsNone(view[key], key)
        self.assertEqual((view["output"], view["error"]), ("", ""))

    def test_status_of_a_finished_job(self):
        response = pb.GetJobStatusResponse(
            job_id="j",
            status=pb.JOB_STATUS_FAILED,
            output="o",
            error="e",
            assigned_worker=2,
            executed_by=2,
            exit_code=0,
            created_at_ms=1,
            completed_at_ms=3,
            started_at_ms=2,
            image="alpine:3",
            timeout_seconds=30,
            attempts=1,
        )
        view = views.job_status(response)
        self.assertEqual(view["exit_code"], 0)  # present and zero is not null
        self.assertEqual((view["assigned_worker"], view["executed_by"]), (2, 2))
        self.assertEqual((view["completed_at_ms"], view["started_at_ms"]), (3, 2))
        self.assertEqual(view["image"], "alpine:3")

    def test_small_answers(self):
        self.assertEqual(
            views.submitted(pb.SubmitJobResponse(job_id="j", created_at_ms=7)),
            {"job_id": "j", "created_at_ms": 7},
        )
        self.assertEqual(
            views.cancelled(pb.CancelJobResponse(success=True, message="m")),
            {"success": True, "message": "m"},
        )
        self.assertEqual(
            views.transferred(pb.TransferLeadershipResponse(success=False, message="m")),
            {"success": False, "message": "m", "new_leader_id": None},
        )
        self.assertEqual(
            views.drained(pb.DrainNodeResponse(success=True, message="m")),
            {"success": True, "message": "m"},
        )

    def test_list(self):
        job = pb.JobInfo(
            job_id="j", command="c", status=pb.JOB_STATUS_RUNNING, assigned_worker=3, image="x"
        )
        view = views.job_list([job], 9, True)
        self.assertEqual(list(view), ["jobs", "total_count", "has_more"])
        self.assertEqual(
            view["jobs"],
            [
                {
                    "job_id": "j",
                    "status": "RUNNING",
                    "command": "c",
                    "assigned_worker": 3,
                    "created_at_ms": 0,
                }
            ],
        )

    def test_cluster_status(self):
        response = pb.GetClusterStatusResponse(
            current_term=4,
            leader_id=0,
            nodes=[pb.NodeInfo(node_id=1, address="a:1", is_alive=True, role="follower")],
        )
        self.assertEqual(
            views.cluster_status(response),
            {
                "current_term": 4,
                "leader_id": None,
                "nodes": [{"node_id": 1, "address": "a:1", "is_alive": True}],
            },
        )

    def test_status_names_in_any_case(self):
        self.assertEqual(views.status_number("Completed"), pb.JOB_STATUS_COMPLETED)
        self.assertEqual(views.status_number("CANCELLED"), pb.JOB_STATUS_CANCELLED)
        self.assertIsNone(views.status_number("unspecified"))
        self.assertIsNone(views.status_number("bogus"))


class LogEntryTests(unittest.TestCase):
    def entry(self, **command) -> dict:
        return views.log_entry(
            pb.RaftLogEntryInfo(index=4, term=2, command=pb.Command(**command), is_committed=True)
        )

    def test_types_and_details_of_every_command(self):
        update = pb.JobStatusUpdate(job_id="a")
        cases = [
            ({}, "Noop", ""),
            (
                {"submit_job": pb.SubmitJobCommand(job_id="a", command="echo 1")},
                "SubmitJob",
                "job_id=a, cmd=echo 1",
            ),
            (
                {
                    "update_job_status": pb.UpdateJobStatusCommand(
                        job_id="a", status=pb.JOB_STATUS_COMPLETED
                    )
                },
                "UpdateJobStatus",
                "job_id=a, status=COMPLETED",
            ),
            (
                {"register_worker": pb.RegisterWorkerCommand(worker_id=3)},
                "RegisterWorker",
                "worker_id=3",
            ),
            (
                {"batch_update_job_status": pb.BatchUpdateJobStatusCommand(updates=[update] * 2)},
                "BatchUpdateJobStatus",
                "2 updates",
            ),
            (
                {"assign_job": pb.AssignJobCommand(job_id="a", worker_id=2)},
                "AssignJob",
                "job_id=a, worker_id=2",
            ),
            ({"cancel_job": pb.CancelJobCommand(job_id="a")}, "CancelJob", "a"),
            (
                {"requeue_job": pb.RequeueJobCommand(job_id="a", attempt=2)},
                "RequeueJob",
                "job_id=a, attempt=2",
            ),
        ]
        for command, command_type, details in cases:
            self.assertEqual(
                self.entry(**command),
                {
                    "index": 4,
                    "term": 2,
                    "command_type": command_type,
                    "command_details": details,
                    "is_committed": True,
                },
            )

    def test_log_keys(self):
        view = views.raft_log(pb.GetRaftLogEntriesResponse(commit_index=3, last_log_index=4))
        self.assertEqual(
            list(view), ["entries", "commit_index", "last_log_index", "first_available_index"]
        )


def final(
    status: int, error: str = "", exit_code: int | None = None, outcome: str = ""
) -> pb.GetJobStatusResponse:
    job = pb.GetJobStatusResponse(job_id="j", status=status, error=error)
    if exit_code is not None:
        job.exit_code = exit_code
    if outcome:
        job.attempt_history.add(attempt=1, worker=1, outcome=outcome)
    return job


class OutcomeTests(unittest.TestCase):
    def test_exit_codes_of_final_jobs(self):
        self.assertEqual(exit_code_of(final(pb.JOB_STATUS_COMPLETED, exit_code=0)), 0)
        self.assertEqual(exit_code_of(final(pb.JOB_STATUS_FAILED, exit_code=7)), 7)
        timed = final(pb.JOB_STATUS_FAILED, "Timed out after 30s", outcome="timed_out")
        self.assertEqual(exit_code_of(timed), 124)
        self.assertEqual(exit_code_of(final(pb.JOB_STATUS_CANCELLED, "Cancelled")), 125)
        self.assertEqual(exit_code_of(final(pb.JOB_STATUS_FAILED, "worker 2 lost")), 1)
        self.assertEqual(exit_code_of(final(pb.JOB_STATUS_FAILED, "boom", exit_code=-9)), 1)

    def test_timed_out_is_the_outcome_of_the_last_attempt_never_the_error_text(self):
        self.assertTrue(timed_out(final(pb.JOB_STATUS_FAILED, "x", outcome="timed_out")))
        self.assertFalse(timed_out(final(pb.JOB_STATUS_FAILED, "Timed out after 1s")))
        self.assertFalse(timed_out(final(pb.JOB_STATUS_FAILED, "Timed out after 1s", 1, "failed")))
        self.assertFalse(timed_out(final(pb.JOB_STATUS_CANCELLED, "", outcome="cancelled")))
        history = final(pb.JOB_STATUS_FAILED, "x", outcome="timed_out")
        history.attempt_history.add(attempt=2, worker=2, outcome="failed")
        self.assertFalse(timed_out(history))


class FinishedOutputTests(unittest.TestCase):
    def test_a_final_job_gives_its_streams_then_the_end(self):
        job = final(pb.JOB_STATUS_FAILED, "err\n", exit_code=3)
        job.output = "out\n"
        self.assertEqual(
            list(finished_output(job)),
            [
                OutputChunk("stdout", "out\n", 0),
                OutputChunk("stderr", "err\n", 0),
                OutputEnd("FAILED", 3),
            ],
        )

    def test_a_job_not_yet_final_gives_nothing(self):
        self.assertEqual(list(finished_output(final(pb.JOB_STATUS_RUNNING))), [])
