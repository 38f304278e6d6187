"""The fence keeper as a real process beside this test process (the "node"): it kills
registered process groups when the lease runs out and when the pipe closes, and comes
back with the whole state if it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from twisted.internet import reactor, task
from twisted.trial import unittest

from jobsched.worker.fence import KEEPER_GRACE_SECONDS, Fence, KeeperProcess
from tests.nodeproc import wait_for
from tests.processes import keeper_pids


class KeeperProcessTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.fence = Fence(reactor, KeeperProcess(reactor))
        self.fence.startService()
        self.addCleanup(self.stop_fence)

    def stop_fence(self):
        if self.fence.running:
            return self.fence.stopService()
        return None

    def job(self) -> subprocess.Popen:
        """A process group of its own, as the process executor starts jobs; registered."""
        process = subprocess.Popen(
            ["sleep", f"60.{uuid.uuid4().int % 10**9}"], start_new_session=True
        )
        self.addCleanup(self.reap, process)
        self.fence.run_started("pgid", str(process.pid), f"job-{process.pid}")
        return process

    @staticmethod
    def reap(process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)

    async def test_a_run_dies_when_the_lease_runs_out_and_not_before(self):
        lease = 1.0
        started = time.monotonic()
        self.fence.extend_lease(reactor.seconds() + lease)
        process = self.job()
        await wait_for(lambda: process.poll() is not None, 20, "the job to be killed")
        self.assertEqual(process.returncode, -signal.SIGKILL)
        self.assertGreaterEqual(time.monotonic() - started, lease + KEEPER_GRACE_SECONDS - 0.05)

    async def test_a_run_dies_when_the_lease_runs_out_while_the_node_keeps_writing(self):
        """The keeper lets lines gather in its pipe between reads, never past the
        lease's end: a node busy starting and ending runs does not delay the kill."""
        lease = 1.0
        started = time.monotonic()
        self.fence.extend_lease(reactor.seconds() + lease)
        process = self.job()

        # Runs of a process group that cannot exist (pids stay below pid_max): once the
        # lease is out the keeper kills each at once, and must never hit a real one.
        nobody = Path("/proc/sys/kernel/pid_max").read_text().strip()

        def chatter():
            self.fence.run_ended(self.fence.run_started("pgid", nobody, "chatter"))

        writing = task.LoopingCall(chatter)
        writing.start(0.002)
        self.addCleanup(lambda: writing.running and writing.stop())
        await wait_for(lambda: process.poll() is not None, 20, "the job to be killed")
        self.assertEqual(process.returncode, -signal.SIGKILL)
        self.assertGreaterEqual(time.monotonic() - started, lease + KEEPER_GRACE_SECONDS - 0.05)

    async def test_a_run_registered_without_a_lease_dies_at_once(self):
        process = self.job()
        await wait_for(lambda: process.poll() is not None, 20, "the job to be killed")
        self.assertEqual(process.returncode, -signal.SIGKILL)

    async def test_closing_the_pipe_kills_every_run_and_the_keeper_exits(self):
        self.fence.extend_lease(reactor.seconds() + 3600)
        processes = [self.job(), self.job()]
        [_keeper] = await wait_for(lambda: keeper_pids(os.getpid()), 20, "the keeper to run")
        await self.fence.stopService()
        self.assertEqual([p.poll() for p in processes], [-signal.SIGKILL] * 2)
        self.assertEqual(keeper_pids(os.getpid()), [])

    async def test_a_keeper_that_dies_comes_back_with_the_runs_and_the_lease(self):
        self.fence.extend_lease(reactor.seconds() + 3600)
        process = self.job()
        [first] = await wait_for(lambda: keeper_pids(os.getpid()), 20, "the keeper to run")
        os.kill(first, signal.SIGKILL)

        def second_keeper():
            return [pid for pid in keeper_pids(os.getpid()) if pid != first]

        await wait_for(second_keeper, 20, "a new keeper to run")
        self.assertIsNone(process.poll())  # the new keeper has the lease: the job lives
        await self.fence.stopService()
        self.assertEqual(process.poll(), -signal.SIGKILL)  # and it had the run
