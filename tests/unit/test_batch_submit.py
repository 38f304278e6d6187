"""Batch submission (API.md §4): one SubmitJobs entry for many jobs, validated as a
whole, answered in order; idempotency keys and the active-job cap job by job."""

from __future__ import annotations

from twisted.internet import task
from twisted.trial import unittest

from jobsched import errors
from jobsched._proto.scheduler_pb2 import Command
from jobsched.api import rest_requests
from jobsched.app import MAX_BATCH_JOBS, SubmitRequest
from jobsched.jobs import commands
from jobsched.jobs.table import JobTable, ListQuery
from tests.unit.test_cluster_api import build, cluster, committed, elected


def batch(*commands_: str, key: str = "") -> list[SubmitRequest]:
    return [SubmitRequest(command, idempotency_key=key) for command in commands_]


class SubmitManyTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.node = build(self.clock)
        elected(self.clock, self.node.raft)
        # as a leader's dispatcher does once every node applies the batched forms
        committed(self.clock, self.node.raft.propose(commands.entry_forms(2)))

    def test_a_batch_is_one_entry_answered_in_order(self):
        before = self.node.raft.status().last_log_index
        jobs = committed(self.clock, self.node.api.submit_many(batch("echo 1", "echo 2", "true")))
        self.assertEqual([job.command for job in jobs], ["echo 1", "echo 2", "true"])
        self.assertEqual(self.node.raft.status().last_log_index, before + 1)
        listed = [self.node.table.get(job.job_id).command for job in jobs]
        self.assertEqual(listed, ["echo 1", "echo 2", "true"])
        self.assertEqual(len({job.job_id for job in jobs}), 3)
        self.assertEqual({job.created_at_ms for job in jobs}, {jobs[0].created_at_ms})

    def test_until_the_cluster_writes_batched_forms_each_job_gets_an_entry(self):
        node = build(self.clock)  # e.g. a node of an older version is in the cluster
        elected(self.clock, node.raft)
        before = node.raft.status().last_log_index
        jobs = committed(self.clock, node.api.submit_many(batch("echo 1", "echo 2")))
        self.assertEqual([job.command for job in jobs], ["echo 1", "echo 2"])
        entries = node.raft.log_entries(before + 1, 10)
        kinds = [Command.FromString(e.command).WhichOneof("command_type") for e in entries]
        self.assertEqual(kinds, ["submit_job", "submit_job"])

    def test_server_defaults_fill_each_job(self):
        jobs = committed(self.clock, self.node.api.submit_many(batch("true")))
        self.assertEqual((jobs[0].timeout_seconds, jobs[0].image), (30, "alpine:latest"))

    def test_the_first_invalid_job_refuses_the_whole_batch(self):
        before = self.node.raft.status().last_log_index
        requests = [SubmitRequest("true"), SubmitRequest("  "), SubmitRequest("x" * 2000)]
        error = self.failureResultOf(self.node.api.submit_many(requests), errors.InvalidArgument)
        self.assertEqual(error.value.message, "job 1: Command cannot be empty")
        self.assertEqual(error.value.code, "INVALID_ARGUMENT")
        self.assertEqual(self.node.raft.status().last_log_index, before)
        self.assertEqual(len(self.node.table), 0)

    def test_a_refused_image_keeps_its_own_code(self):
        node = build(self.clock, allowed_images=("alpine:*",))
        elected(self.clock, node.raft)
        requests = [SubmitRequest("true"), SubmitRequest("true", image="evil:1")]
        error = self.failureResultOf(node.api.submit_many(requests), errors.PermissionDenied)
        self.assertEqual(error.value.message, "job 1: Image not allowed")

    def test_empty_and_oversized_batches_are_refused(self):
        for size in (0, MAX_BATCH_JOBS + 1):
            error = self.failureResultOf(
                self.node.api.submit_many(batch(*["true"] * size)), errors.InvalidArgument
            )
            self.assertEqual(error.value.message, f"a batch holds 1 to 1000 jobs (got {size})")

    def test_a_thousand_jobs_fit(self):
        jobs = committed(self.clock, self.node.api.submit_many(batch(*["true"] * 1000)))
        self.assertEqual(len(jobs), 1000)

    def test_idempotency_keys_work_per_job(self):
        first = committed(
            self.clock, self.node.api.submit(SubmitRequest("true", idempotency_key="k"))
        )
        requests = [
            SubmitRequest("echo a", idempotency_key="k"),
            SubmitRequest("echo b", idempotency_key="n"),
            SubmitRequest("echo c", idempotency_key="n"),
        ]
        jobs = committed(self.clock, self.node.api.submit_many(requests))
        self.assertEqual(jobs[0].job_id, first.job_id)
        self.assertEqual(jobs[1].job_id, jobs[2].job_id)
        self.assertEqual(jobs[1].command, "echo b")
        self.assertEqual(len(self.node.table), 2)

    def test_each_job_counts_against_the_active_job_cap(self):
        node = build(self.clock, max_active_jobs=5)
        elected(self.clock, node.raft)
        committed(self.clock, node.api.submit_many(batch(*["true"] * 3)))
        error = self.failureResultOf(node.api.submit_many(batch(*["true"] * 3)), errors.QueueFull)
        self.assertEqual(error.value.message, "Job queue is at capacity")
        self.assertEqual(len(committed(self.clock, node.api.submit_many(batch("a", "b")))), 2)
        self.failureResultOf(node.api.submit(SubmitRequest("true")), errors.QueueFull)

    def test_a_draining_node_refuses_a_batch(self):
        self.node.drain_flag.active = True
        self.failureResultOf(self.node.api.submit_many(batch("true")), errors.Draining)


class FollowerTests(unittest.TestCase):
    def test_a_follower_refuses_and_its_router_check_names_the_job(self):
        clock = task.Clock()
        _leader, follower = cluster(self, clock)
        self.failureResultOf(follower.api.submit_many(batch("true")), errors.NotLeader)
        error = self.assertRaises(
            errors.InvalidArgument, follower.api.check_batch, batch("true", "")
        )
        self.assertEqual(error.message, "job 1: Command cannot be empty")


class TableTests(unittest.TestCase):
    def test_submit_jobs_entry_applies_each_job_in_order(self):
        table = JobTable()
        events = []
        table.add_listener(lambda event, job: events.append((event, job.command)))
        jobs = [commands.job_to_submit(f"id-{n}", f"echo {n}", 1000 + n) for n in range(3)]
        applied = table.apply(1, commands.submit_jobs(jobs))
        self.assertEqual([job.job_id for job in applied], ["id-0", "id-1", "id-2"])
        self.assertEqual(events, [("submitted", f"echo {n}") for n in range(3)])
        page = table.list_jobs(ListQuery())
        self.assertEqual([job.job_id for job in page.jobs], ["id-0", "id-1", "id-2"])


class RestBodyTests(unittest.TestCase):
    def test_a_batch_body_lists_jobs_as_post_api_jobs_takes_them(self):
        requests = rest_requests.submit_batch(
            {"jobs": [{"command": "true"}, {"command": "echo", "max_attempts": 2}]}
        )
        self.assertEqual(
            [(r.command, r.max_attempts) for r in requests], [("true", 0), ("echo", 2)]
        )

    def test_bad_batch_bodies_are_refused_with_the_jobs_place(self):
        cases = {
            "request body must be a JSON object": [],
            "jobs is required and must be an array": {"jobs": "true"},
            "unknown field: job": {"job": []},
            "job 1: command is required and must be a string": {"jobs": [{"command": "a"}, {}]},
            "job 0: unknown field: cmd": {"jobs": [{"cmd": "b"}]},
        }
        for message, body in cases.items():
            error = self.assertRaises(errors.InvalidArgument, rest_requests.submit_batch, body)
            self.assertEqual(error.message, message)


class SubmitWithAssignmentTests(unittest.TestCase):
    def test_a_submit_carrying_an_assignment_runs_at_once(self):
        table = JobTable()
        events = []
        table.add_listener(lambda event, job: events.append((event, job.status.label)))
        job = commands.job_to_submit("a", "true", 1000)
        job.assignment.CopyFrom(commands.assignment("a", 2, 1, 77, 1500))
        table.apply(1, commands.entry(submit_job=job))
        stored = table.get("a")
        self.assertEqual(
            (stored.status.label, stored.assigned_worker, stored.worker_incarnation),
            ("running", 2, 77),
        )
        self.assertEqual((stored.attempts, stored.started_at_ms), (1, 1500))
        self.assertEqual(events, [("submitted", "pending"), ("assigned", "running")])

    def test_a_repeated_key_ignores_the_new_assignment(self):
        table = JobTable()
        table.apply(1, commands.submit_job("a", "true", 1000, idempotency_key="k"))
        again = commands.job_to_submit("b", "true", 1001, idempotency_key="k")
        again.assignment.CopyFrom(commands.assignment("b", 2, 1))
        [job] = table.apply(2, commands.submit_jobs([again]))
        self.assertEqual((job.job_id, table.get("a").status.label), ("a", "pending"))
        self.assertIsNone(table.get("b"))
