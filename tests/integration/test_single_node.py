"""A single real node end to end: REST and gRPC submit, run, observe (process executor)."""

import shutil
import uuid
from pathlib import Path

import grpc
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched.net.outbound import CallFailed
from tests.integration.jobwait import wait_finished, wait_status
from tests.nodeproc import NodeFactory, metric_samples, wait_for
from tests.promtool import check_metrics


def command_lines() -> list[str]:
    """The command line of every process on the machine."""
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # the process ended meanwhile
            pass
    return lines


class SingleNodeTests(unittest.TestCase):
    """One node of its own per test, with the process executor."""

    timeout = 180

    async def setUp(self) -> None:
        self.node = NodeFactory.for_test(self).start(
            "--executor", "process", "--max-job-timeout", "600"
        )
        await self.node.until_ready()

    async def submit(self, command: str, **fields) -> pb.SubmitJobResponse:
        return await self.node.call("SubmitJob", pb.SubmitJobRequest(command=command, **fields))

    async def test_rest_submit_runs_and_every_view_shows_the_result(self):
        node = self.node
        answer = await node.rest("POST", "/api/jobs", {"command": "echo hello"})
        self.assertEqual(answer.status, 200)
        self.assertIs(answer.body["success"], True)
        self.assertIsNone(answer.body["error"])
        self.assertEqual(answer.body["status"], "pending")
        job_id = answer.body["job_id"]

        status = await wait_finished(node, job_id)
        self.assertEqual(status.status, pb.JOB_STATUS_COMPLETED)
        self.assertEqual(status.output, "hello\n")
        self.assertTrue(status.HasField("exit_code"))
        self.assertEqual(status.exit_code, 0)
        self.assertEqual(status.executed_by, 1)

        jobs = (await node.rest("GET", "/api/jobs")).body
        listed = [job for job in jobs if job["id"] == job_id]
        self.assertEqual(len(listed), 1)
        self.assertEqual(listed[0]["status"], "completed")
        self.assertEqual(listed[0]["output"], "hello\n")
        self.assertEqual(listed[0]["exit_code"], 0)
        self.assertTrue(listed[0]["created_at"].endswith("+00:00"))
        self.assertTrue(listed[0]["completed_at"].endswith("+00:00"))

        one = await node.rest("GET", f"/api/jobs/{job_id.upper()}")
        self.assertEqual((one.status, one.body["output"]), (200, "hello\n"))

        output = await node.call("GetJobOutput", pb.GetJobOutputRequest(job_id=job_id))
        self.assertTrue(output.found)
        self.assertEqual(output.output, "hello\n")

    async def test_grpc_submit_runs_and_reports_failure_with_stderr(self):
        reply = await self.submit("echo out; echo err >&2; exit 3")
        self.assertGreater(reply.created_at_ms, 0)
        status = await wait_finished(self.node, reply.job_id)
        self.assertEqual(status.status, pb.JOB_STATUS_FAILED)
        self.assertEqual(status.exit_code, 3)
        self.assertEqual(status.output, "out\n")
        self.assertEqual(status.error, "err\n")
        self.assertEqual(status.command, "echo out; echo err >&2; exit 3")
        self.assertEqual(status.attempts, 1)
        self.assertTrue(status.HasField("started_at_ms"))
        self.assertTrue(status.HasField("completed_at_ms"))

    async def test_timeout_fails_the_job(self):
        reply = await self.submit("sleep 60", timeout_seconds=1)
        early = await self.node.call("GetJobOutput", pb.GetJobOutputRequest(job_id=reply.job_id))
        self.assertEqual((early.job_id, early.found), (reply.job_id, False))  # no output yet
        status = await wait_finished(self.node, reply.job_id)
        self.assertEqual(status.status, pb.JOB_STATUS_FAILED)
        self.assertEqual(status.error, "Timed out after 1s")
        self.assertFalse(status.HasField("exit_code"))

    async def test_cancel_a_running_job(self):
        # a sleep no other test runs, so that `ps` finds only this test's process
        sleeper = f"sleep 60.{uuid.uuid4().int % 10**9:09d}"
        reply = await self.submit(sleeper)
        await wait_status(self.node, reply.job_id, pb.JOB_STATUS_RUNNING)
        await wait_for(
            lambda: any(sleeper in line for line in command_lines()),
            30,
            "the job's process to appear",
        )
        cancelled = await self.node.call("CancelJob", pb.CancelJobRequest(job_id=reply.job_id))
        self.assertTrue(cancelled.success)
        self.assertEqual(cancelled.message, f"job {reply.job_id} cancelled")
        status = await wait_finished(self.node, reply.job_id)
        self.assertEqual(status.status, pb.JOB_STATUS_CANCELLED)
        self.assertTrue(status.HasField("completed_at_ms"))
        await wait_for(
            lambda: not any(sleeper in line for line in command_lines()),
            30,
            "the cancelled process to be killed",
        )

    async def test_a_running_job_shows_where_it_runs_and_since_when(self):
        reply = await self.submit(f"sleep 60.{uuid.uuid4().int % 10**9:09d}")
        status = await wait_status(self.node, reply.job_id, pb.JOB_STATUS_RUNNING)
        self.assertEqual(status.executed_by, 1)
        self.assertTrue(status.HasField("started_at_ms"))
        self.assertGreaterEqual(status.started_at_ms, status.created_at_ms)
        job = (await self.node.rest("GET", f"/api/jobs/{reply.job_id}")).body
        self.assertEqual((job["status"], job["executed_by"]), ("running", 1))
        self.assertIsNotNone(job["started_at"])
        listed = (await self.node.rest("GET", "/api/jobs?status=running")).body
        self.assertEqual([(j["id"], j["executed_by"]) for j in listed], [(reply.job_id, 1)])
        await self.node.call("CancelJob", pb.CancelJobRequest(job_id=reply.job_id))

    async def test_idempotency_key_returns_the_same_job(self):
        first = await self.submit("true", idempotency_key="k-1")
        again = await self.submit("true", idempotency_key="k-1")
        other = await self.submit("true", idempotency_key="k-2")
        self.assertEqual(first.job_id, again.job_id)
        self.assertNotEqual(other.job_id, first.job_id)

    async def test_list_filters_and_paging(self):
        node = self.node
        ids = [(await self.submit(f"echo Item-{n}")).job_id for n in range(7)]
        for job_id in ids:
            await wait_finished(node, job_id)
        page = await node.call("ListJobs", pb.ListJobsRequest(page_size=3, command_filter="item-"))
        self.assertEqual(page.total_count, 7)
        self.assertEqual([job.job_id for job in page.jobs], ids[:3])
        seen = [job.job_id for job in page.jobs]
        while page.next_page_token:
            page = await node.call(
                "ListJobs",
                pb.ListJobsRequest(
                    page_size=3, command_filter="item-", page_token=page.next_page_token
                ),
            )
            seen += [job.job_id for job in page.jobs]
        self.assertEqual(seen, ids)
        completed = await node.call(
            "ListJobs",
            pb.ListJobsRequest(status_filter=pb.JOB_STATUS_COMPLETED, worker_id_filter=1),
        )
        self.assertLessEqual(set(ids), {job.job_id for job in completed.jobs})
        none = await node.call("ListJobs", pb.ListJobsRequest(worker_id_filter=99))
        self.assertEqual(none.total_count, 0)
        self.assertEqual(list(none.jobs), [])
        # a server stream has no future(): read it in a thread
        streamed = await deferToThread(
            lambda: [
                job.job_id for job in node.scheduler.StreamJobs(pb.StreamJobsRequest(), timeout=30)
            ]
        )
        self.assertEqual(streamed, ids)

        rest = await node.rest("GET", "/api/jobs?command=ITEM-&limit=5")
        self.assertEqual([job["id"] for job in rest.body], ids[:5])
        token = rest.headers["x-next-page-token"]
        rest2 = await node.rest("GET", f"/api/jobs?command=ITEM-&limit=5&page_token={token}")
        self.assertEqual([job["id"] for job in rest2.body], ids[5:])

    async def test_cluster_status_and_log(self):
        node = self.node
        status = await node.call("GetClusterStatus", pb.GetClusterStatusRequest())
        self.assertEqual(status.leader_id, 1)
        self.assertGreaterEqual(status.current_term, 1)
        self.assertEqual(
            [(n.node_id, n.is_alive, n.role) for n in status.nodes], [(1, True, "leader")]
        )
        self.assertEqual(status.nodes[0].address, node.grpc_address)

        await self.submit("true")
        log = await node.call("GetRaftLogEntries", pb.GetRaftLogEntriesRequest())
        self.assertEqual(log.first_available_index, 1)
        self.assertEqual(log.entries[0].index, 1)
        # the leader's no-op opens the log
        self.assertIsNone(log.entries[0].command.WhichOneof("command_type"))
        kinds = [entry.command.WhichOneof("command_type") for entry in log.entries]
        self.assertIn("submit_job", kinds)
        committed = [entry for entry in log.entries if entry.index <= log.commit_index]
        self.assertTrue(all(entry.is_committed for entry in committed))

        cluster = (await node.rest("GET", "/api/cluster")).body
        self.assertEqual(
            (cluster["node_id"], cluster["role"], cluster["leader_id"]), (1, "leader", 1)
        )
        self.assertGreaterEqual(cluster["log_length"], cluster["commit_index"])
        self.assertGreaterEqual(cluster["commit_index"], 1)
        self.assertIs(cluster["nodes"][0]["is_alive"], True)
        self.assertEqual((await node.rest("GET", "/health/live")).body, {"status": "ok"})
        self.assertEqual(
            (await node.rest("GET", "/health/ready")).body, {"status": "ok", "leader_id": 1}
        )

    async def test_dashboard_placeholder_is_served_with_security_headers(self):
        page = await self.node.rest("GET", "/")
        self.assertEqual(page.status, 200)
        self.assertIn("jobsched", page.body)
        self.assertEqual(page.headers["x-content-type-options"], "nosniff")
        self.assertIn("default-src 'self'", page.headers["content-security-policy"])

    async def test_drain_refuses_new_jobs_and_a_lone_leader_cannot_hand_over(self):
        node = self.node
        running = (await self.submit("sleep 1; echo slept")).job_id
        await wait_status(node, running, pb.JOB_STATUS_RUNNING)
        before = (await node.rest("GET", "/api/jobs")).body
        reply = await node.call("DrainNode", pb.DrainNodeRequest(), timeout=70)
        self.assertEqual((reply.success, reply.message), (False, "No peers available for transfer"))
        # it was let finish
        self.assertEqual((await wait_finished(node, running)).output, "slept\n")

        with self.assertRaises(CallFailed) as caught:
            await self.submit("true")
        self.assertEqual(
            (caught.exception.code, caught.exception.details),
            (grpc.StatusCode.UNAVAILABLE, "Node is draining and not accepting new jobs"),
        )
        answer = await node.rest("POST", "/api/jobs", {"command": "true"})
        self.assertEqual(answer.status, 503)
        self.assertEqual(
            answer.body,
            {
                "success": False,
                "job_id": None,
                "error": "Node is draining and not accepting new jobs",
                "code": "DRAINING",
            },
        )
        again = await node.rest("POST", "/api/nodes/self/drain")
        self.assertEqual(again.status, 409)
        self.assertIs(again.body["success"], False)
        after = (await node.rest("GET", "/api/jobs")).body
        self.assertEqual([job["id"] for job in after], [job["id"] for job in before])
        cluster = await node.call("GetClusterStatus", pb.GetClusterStatusRequest())
        self.assertIs(cluster.nodes[0].draining, True)

    async def test_metrics_in_prometheus_text(self):
        job_id = (await self.submit("true")).job_id
        await wait_finished(self.node, job_id)
        answer = await self.node.rest("GET", "/metrics")
        self.assertEqual(answer.status, 200)
        self.assertTrue(answer.headers["content-type"].startswith("text/plain; version=0.0.4"))
        samples = metric_samples(answer.body)
        self.assertEqual(samples["jobsched_raft_is_leader"], 1)
        self.assertGreaterEqual(samples['jobsched_jobs{status="completed"}'], 1)
        self.assertGreaterEqual(samples["jobsched_raft_commit_index"], 3)
        self.assertGreaterEqual(samples["jobsched_raft_commit_seconds_count"], 2)
        self.assertEqual(samples["jobsched_job_run_seconds_count"], 1)
        self.assertEqual(samples["jobsched_worker_slots_in_use"], 0)
        if shutil.which("promtool"):  # tests/unit/test_metrics.py requires it in CI
            status, output = check_metrics(answer.body.encode())
            self.assertEqual((status, output), (0, ""))
