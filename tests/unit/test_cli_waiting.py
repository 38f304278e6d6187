"""Waiting for a job: polls until final with a capped backoff; gives up at --max-wait
(exit 3) and on Ctrl-C (exit 130), saying how to go on."""

import io

from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli.failures import CliExit
from jobsched.cli.output import Printer
from jobsched.cli.waiting import MAX_POLL_INTERVAL, wait_until_final


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedNode:
    """Answers GetJobStatus with the given statuses, the last one for ever after."""

    def __init__(self, *statuses: int, interrupt_at: int | None = None) -> None:
        self._statuses = list(statuses)
        self._interrupt_at = interrupt_at
        self.calls = 0

    def call(self, method: str, request):
        assert method == "GetJobStatus"
        self.calls += 1
        if self.calls == self._interrupt_at:
            raise KeyboardInterrupt
        status = self._statuses[min(self.calls, len(self._statuses)) - 1]
        return pb.GetJobStatusResponse(job_id=request.job_id, status=status)


class WaitTests(unittest.TestCase):
    def setUp(self):
        self.clock = FakeClock()
        self.out, self.err = io.StringIO(), io.StringIO()

    def wait(self, node, output="table", max_wait=None):
        return wait_until_final(
            node,
            "j1",
            Printer(output, self.out, self.err),
            resume_hint="jobsched job wait j1",
            cancel_hint="jobsched job cancel j1",
            max_wait=max_wait,
            clock=self.clock.time,
            sleep=self.clock.sleep,
        )

    def test_polls_until_final_with_a_growing_capped_interval(self):
        statuses = [pb.JOB_STATUS_PENDING] * 3 + [pb.JOB_STATUS_RUNNING] * 10
        node = ScriptedNode(*statuses, pb.JOB_STATUS_COMPLETED)
        job = self.wait(node)
        self.assertEqual(job.status, pb.JOB_STATUS_COMPLETED)
        self.assertEqual(node.calls, 14)
        self.assertEqual(self.clock.sleeps, sorted(self.clock.sleeps))
        self.assertEqual(max(self.clock.sleeps), MAX_POLL_INTERVAL)
        self.assertEqual(self.err.getvalue(), "")  # piped: no spinner

    def test_max_wait_ends_with_3_and_says_how_to_resume(self):
        node = ScriptedNode(pb.JOB_STATUS_RUNNING)
        with self.assertRaises(CliExit) as raised:
            self.wait(node, max_wait=5)
        self.assertEqual(raised.exception.exit_code, 3)
        self.assertLessEqual(self.clock.now - 100.0, 5.0)
        self.assertIn("still RUNNING after 5s; it goes on", self.err.getvalue())
        self.assertIn("jobsched job wait j1", self.err.getvalue())
        self.assertEqual(self.out.getvalue(), "")

    def test_max_wait_in_json_prints_the_current_status(self):
        with self.assertRaises(CliExit):
            self.wait(ScriptedNode(pb.JOB_STATUS_PENDING), output="json", max_wait=1)
        self.assertIn('"status": "PENDING"', self.out.getvalue())

    def test_ctrl_c_ends_with_130_and_says_how_to_cancel(self):
        node = ScriptedNode(pb.JOB_STATUS_RUNNING, interrupt_at=3)
        with self.assertRaises(CliExit) as raised:
            self.wait(node)
        self.assertEqual(raised.exception.exit_code, 130)
        self.assertIn("job j1 goes on", self.err.getvalue())
        self.assertIn("Cancel it with: jobsched job cancel j1", self.err.getvalue())
