"""A worker lost mid-job on a real 3-node cluster: the job runs again elsewhere (or,
with max_attempts = 1, fails `worker <id> lost`), and its attempt history says so on
GetJobStatus and REST, on every node."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from tests.integration.jobwait import wait_finished, wait_status
from tests.nodeproc import Cluster, Node, NodeFactory, wait_for

EXPIRY = "2"


class LostWorkerTests(unittest.TestCase):
    """Jobs wait for a `go` file, so the test decides when they end; each job's shell
    writes its PID to a file, and the cleanup kills the ones still alive (a job of a
    SIGKILLed node keeps running as an orphan)."""

    timeout = 300

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir(parents=True)
        self.go = self.workdir / "go"
        self.pids = self.workdir / "pids"
        self.command = (
            f"echo $$ >> {self.pids}; while [ ! -e {self.go} ]; do sleep 0.1; done; echo done"
        )
        self.submitted = 0
        self.addCleanup(self.end_jobs)

    def end_jobs(self) -> None:
        """Kill by PID every job shell still waiting, then let any other go."""
        for pid in self.job_pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    if str(self.go).encode() not in cmdline.read():
                        continue  # that shell has ended and its PID is someone else's
                os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass
        self.go.touch()

    def job_pids(self) -> list[int]:
        return [int(line) for line in self.pids.read_text().split()] if self.pids.exists() else []

    async def start(self) -> tuple[Cluster, Node]:
        cluster = Cluster(NodeFactory.for_test(self), 3, "--worker-expiry", EXPIRY)
        return cluster, await cluster.find_leader()

    async def job_on_a_follower(self, leader: Node, max_attempts: int = 0) -> tuple[str, int]:
        """Submit waiting jobs until one runs on a follower (the leader's own worker takes
        the first ones while the followers' first heartbeats are on their way); return
        once every one of them has started."""

        async def placed():
            request = pb.SubmitJobRequest(command=self.command, max_attempts=max_attempts)
            reply = await leader.call("SubmitJob", request)
            self.submitted += 1
            status = await wait_status(leader, reply.job_id, pb.JOB_STATUS_RUNNING)
            if status.assigned_worker != leader.node_id:
                return reply.job_id, status.assigned_worker
            return None

        found = await wait_for(placed, 120, "a job to run on a follower", interval=0.5)
        await self.every_job_started(extra=0)
        return found

    async def every_job_started(self, extra: int) -> None:
        """Wait until the submitted jobs have started, plus `extra` second attempts."""
        expected = self.submitted + extra
        await wait_for(lambda: len(self.job_pids()) >= expected, 60, "every job to start")
        self.assertEqual(len(self.job_pids()), expected)

    async def status_everywhere(self, cluster: Cluster, job_id: str) -> list:
        """GetJobStatus and the REST job object of `job_id` from every live node, once
        they all agree."""

        async def agreed():
            answers = []
            for node in cluster.live_nodes():
                status = await node.call("GetJobStatus", pb.GetJobStatusRequest(job_id=job_id))
                answers.append((status, (await node.rest("GET", f"/api/jobs/{job_id}")).body))
            same = all(a[0] == answers[0][0] and a[1] == answers[0][1] for a in answers)
            return answers if same else None

        return await wait_for(agreed, 60, f"every node to show the same job {job_id}")

    def assertLostAttempt(self, record, worker: int) -> None:
        """The first attempt, on the killed worker, declared lost; its result never came."""
        self.assertEqual((record.attempt, record.worker), (1, worker))
        self.assertEqual((record.outcome, record.late), ("lost", False))
        self.assertTrue(record.HasField("started_at_ms") and record.HasField("finished_at_ms"))
        self.assertLess(record.started_at_ms, record.finished_at_ms)

    async def test_a_job_of_a_lost_worker_runs_again_elsewhere(self):
        cluster, leader = await self.start()
        job_id, lost_worker = await self.job_on_a_follower(leader)
        cluster.nodes[lost_worker].kill()

        async def second_attempt_running():
            status = await leader.call("GetJobStatus", pb.GetJobStatusRequest(job_id=job_id))
            return status.status == pb.JOB_STATUS_RUNNING and status.attempts == 2

        await wait_for(second_attempt_running, 60, "the job's second attempt to run")
        self.go.touch()
        final = await wait_finished(leader, job_id)
        self.assertEqual((final.status, final.output), (pb.JOB_STATUS_COMPLETED, "done\n"))

        for status, body in await self.status_everywhere(cluster, job_id):
            self.assertEqual(status.attempts, 2)
            lost, rerun = status.attempt_history
            self.assertLostAttempt(lost, lost_worker)
            self.assertEqual((rerun.attempt, rerun.outcome, rerun.late), (2, "completed", False))
            self.assertNotEqual(rerun.worker, lost_worker)
            self.assertEqual(rerun.worker, status.executed_by)
            self.assertLessEqual(lost.finished_at_ms, rerun.started_at_ms)
            self.assertLessEqual(rerun.started_at_ms, rerun.finished_at_ms)
            self.assertEqual(
                body["attempt_history"],
                [
                    {
                        "attempt": r.attempt,
                        "worker": r.worker,
                        "started_at_ms": r.started_at_ms,
                        "finished_at_ms": r.finished_at_ms,
                        "outcome": r.outcome,
                        "late": r.late,
                    }
                    for r in (lost, rerun)
                ],
            )
        # every job started once, this one twice (once on the lost worker)
        await self.every_job_started(extra=1)

    async def test_with_max_attempts_one_a_lost_worker_fails_the_job(self):
        cluster, leader = await self.start()
        job_id, lost_worker = await self.job_on_a_follower(leader, max_attempts=1)
        cluster.nodes[lost_worker].kill()

        final = await wait_finished(leader, job_id)
        self.assertEqual(final.status, pb.JOB_STATUS_FAILED)
        self.assertEqual(final.error, f"worker {lost_worker} lost")

        for status, body in await self.status_everywhere(cluster, job_id):
            self.assertEqual((status.status, status.attempts), (pb.JOB_STATUS_FAILED, 1))
            [lost] = status.attempt_history
            self.assertLostAttempt(lost, lost_worker)
            self.assertEqual(body["status"], "failed")
            self.assertEqual(body["error"], f"worker {lost_worker} lost")
            self.assertEqual(
                [(r["attempt"], r["worker"], r["outcome"]) for r in body["attempt_history"]],
                [(1, lost_worker, "lost")],
            )
        await self.every_job_started(extra=0)
