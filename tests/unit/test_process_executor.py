"""ProcessExecutor: the shared behaviour table, timeouts, cancel and process groups.

These tests spawn real processes on the real reactor. Every test's executor is stopped
at the end, and the test then waits until no process it spawned (nor any process in
their groups) is left.
"""

from __future__ import annotations

import errno
import os
import shlex
import time
import uuid
from pathlib import Path
from unittest import mock

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched.interfaces import IExecutor
from jobsched.jobs.model import JobStatus
from jobsched.worker.process import GATE, ProcessExecutor, spawn_job
from jobsched.worker.results import LEASE_RAN_OUT
from tests.executor_cases import CASES, check_result, new_spec
from tests.unit.test_fence import RecordingFence

# A shell that leaves a background child, records its pid (== its process group) and waits.
GROUP_COMMAND = "sleep 60 & echo $$ > {pidfile}; echo started; wait"

# Generous: the machine is shared and slow; what is checked is "long before the
# `sleep 60` of the command would have ended".
PROMPTLY = 30.0


class SpawnRecorder:
    """Starts jobs as the executor does, recording the pid of every child."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def __call__(self, argv, env, stdin, stdout, stderr):
        child = spawn_job(argv, env, stdin, stdout, stderr)
        self.pids.append(child.pid)
        return child


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes (zombies excluded) whose process group is `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def live_processes_mentioning(marker: str) -> list[int]:
    """Pids of live processes (zombies excluded) whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline.decode(errors="replace") and state != "Z":
            found.append(int(entry))
    return found


async def wait_until(predicate, what, timeout: float = PROMPTLY) -> None:
    """Poll `predicate` on the reactor until it holds; after `timeout` seconds, fail
    with the message `what()` gives then."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"after {timeout}s: {what()}")
        await deferLater(reactor, 0.02, lambda: None)


async def group_gone(pgid: int) -> None:
    """Wait until no live process is left in group `pgid` (SIGKILL is delivered
    asynchronously: a killed process may still be running for a moment)."""
    await wait_until(
        lambda: not live_group_members(pgid),
        lambda: f"group {pgid} still has {live_group_members(pgid)}",
    )


class ProcessExecutorTestCase(unittest.TestCase):
    """Makes executors on a recording reactor; cleans up every process they spawned."""

    def setUp(self) -> None:
        self.reactor = reactor
        self.spawned = SpawnRecorder()
        self.addCleanup(self.spawned_processes_gone)

    async def spawned_processes_gone(self) -> None:
        for pid in self.spawned.pids:
            await group_gone(pid)  # the job's own pid is its group

    def make_executor(self, **options) -> ProcessExecutor:
        executor = ProcessExecutor(self.reactor, spawn=self.spawned, **options)
        self.addCleanup(executor.stop)
        return executor

    def pidfile(self) -> Path:
        """A fresh, absolute path for a job to write its shell's pid to."""
        directory = Path(self.mktemp()).absolute()
        directory.mkdir(parents=True)
        return directory / "pid"

    def group_command(self, pidfile: Path) -> str:
        return GROUP_COMMAND.format(pidfile=shlex.quote(str(pidfile)))

    async def wait_for_pid(self, pidfile: Path) -> int:
        await wait_until(
            lambda: pidfile.exists() and pidfile.read_text().strip(),
            lambda: f"{pidfile} was not written",
        )
        return int(pidfile.read_text())


class BehaviourTableTests(ProcessExecutorTestCase):
    """One test per case of tests/executor_cases.py (added below)."""


def _behaviour_test(case_name: str):
    case = CASES[case_name]

    async def test(self: BehaviourTableTests) -> None:
        executor = self.make_executor(max_output_bytes=case.max_output_bytes)
        await executor.start()
        result = await executor.run(new_spec(case.command))
        check_result(self, result, case)

    test.__name__ = test.__qualname__ = f"test_{case_name.replace('-', '_')}"
    test.__doc__ = f"Behaviour table, case {case_name}: {case.command!r}"
    return test


for _case_name in CASES:
    _test = _behaviour_test(_case_name)
    setattr(BehaviourTableTests, _test.__name__, _test)


class ProcessExecutorTests(ProcessExecutorTestCase):
    def test_provides_iexecutor(self) -> None:
        executor = self.make_executor()
        self.assertTrue(verifyObject(IExecutor, executor))
        self.assertEqual(executor.name, "process")

    async def test_image_is_ignored(self) -> None:
        executor = self.make_executor()
        result = await executor.run(new_spec("echo hi", image="jobsched-test/nope:latest"))
        self.assertEqual((result.status, result.output), (JobStatus.COMPLETED, "hi\n"))

    async def test_node_environment_is_not_passed(self) -> None:
        environment = mock.patch.dict(os.environ, {"JOBSCHED_TEST_SECRET": "s3cret"})
        environment.start()
        self.addCleanup(environment.stop)
        executor = self.make_executor()
        result = await executor.run(new_spec('echo "[$JOBSCHED_TEST_SECRET]"'))
        self.assertEqual(result.output, "[]\n")

    async def test_cancel_of_unknown_job_is_harmless(self) -> None:
        await self.make_executor().cancel(new_spec("true").job_id)

    async def test_remove_leftovers_finds_nothing(self) -> None:
        self.assertEqual(await self.make_executor().remove_leftovers(), [])

    async def test_each_run_is_under_the_fence_until_its_result_is_delivered(self) -> None:
        events = []
        executor = self.make_executor(fence=RecordingFence(events))
        spec = new_spec("echo $$")
        run = executor.run(spec)
        [(started, token, kind, target, label)] = events
        self.assertEqual((started, kind, label), ("started", "pgid", spec.job_id))
        run.addCallback(lambda result: events.append(("delivered", result.output)))
        await run
        # the job's shell is its group's leader
        self.assertEqual(events[1:], [("ended", token), ("delivered", f"{target}\n")])


class KillTests(ProcessExecutorTestCase):
    """A timeout, a cancel, a stop or the end of the shell kills the job's whole group."""

    async def test_timeout_kills_the_whole_group(self) -> None:
        executor = self.make_executor()
        pidfile = self.pidfile()
        started = reactor.seconds()
        result = await executor.run(new_spec(self.group_command(pidfile), timeout_seconds=2))
        elapsed = reactor.seconds() - started
        self.assertGreaterEqual(elapsed, 2)
        self.assertLess(elapsed, PROMPTLY)
        self.assertEqual(result.status, JobStatus.FAILED)
        self.assertIsNone(result.exit_code)
        self.assertEqual(result.error, "Timed out after 2s")
        self.assertIs(result.timed_out, True)
        self.assertEqual(result.output, "started\n")
        await group_gone(int(pidfile.read_text()))

    async def test_cancel_kills_the_whole_group(self) -> None:
        executor = self.make_executor()
        pidfile = self.pidfile()
        spec = new_spec(self.group_command(pidfile))
        running = executor.run(spec)
        pgid = await self.wait_for_pid(pidfile)
        self.assertEqual(len(live_group_members(pgid)), 2)  # the shell and its `sleep 60`
        cancelled_at = reactor.seconds()
        await executor.cancel(spec.job_id)
        result = await running
        self.assertLess(reactor.seconds() - cancelled_at, PROMPTLY)
        self.assertEqual(
            (result.status, result.exit_code, result.error), (JobStatus.FAILED, None, "Cancelled")
        )
        self.assertIs(result.timed_out, False)
        await group_gone(pgid)

    async def test_background_children_die_when_the_shell_exits(self) -> None:
        executor = self.make_executor()
        pidfile = self.pidfile()
        started = reactor.seconds()
        result = await executor.run(new_spec(f"sleep 60 & echo $$ > {shlex.quote(str(pidfile))}"))
        self.assertLess(reactor.seconds() - started, PROMPTLY)
        self.assertEqual((result.status, result.exit_code), (JobStatus.COMPLETED, 0))
        await group_gone(int(pidfile.read_text()))

    async def test_stop_kills_running_jobs_and_refuses_new_ones(self) -> None:
        executor = self.make_executor()
        pidfile = self.pidfile()
        running = executor.run(new_spec(self.group_command(pidfile)))
        pgid = await self.wait_for_pid(pidfile)
        await executor.stop()
        result = await running
        self.assertEqual(
            (result.status, result.exit_code, result.error),
            (JobStatus.FAILED, None, "Executor stopped"),
        )
        await group_gone(pgid)
        late = await executor.run(new_spec("echo late"))
        self.assertEqual((late.status, late.error), (JobStatus.FAILED, "Executor stopped"))

    async def test_cancel_right_after_start_leaves_nothing_running(self) -> None:
        """A cancel that lands before the child has made its process group still kills it
        (it would otherwise go on as `sh`, then the command, untouched)."""
        # A duration no other test (nor another run of this one) uses: the marker.
        command = f"sleep 61.{uuid.uuid4().int % 10**9:09d}"
        executor = self.make_executor()
        for _attempt in range(20):
            spec = new_spec(command)
            running = executor.run(spec)
            await executor.cancel(spec.job_id)
            result = await running.addTimeout(PROMPTLY, reactor)
            self.assertEqual(result.error, "Cancelled")
        await wait_until(
            lambda: not live_processes_mentioning(command),
            lambda: f"cancelled `{command}` still running: {live_processes_mentioning(command)}",
        )

    async def test_a_child_that_cannot_be_watched_is_killed_and_reported(self) -> None:
        """Out of file descriptors right after the spawn: the job fails to start, and
        its child, fenced meanwhile, does not run on unwatched."""
        command = f"sleep 63.{uuid.uuid4().int % 10**9:09d}"  # the marker, as above
        events = []
        executor = self.make_executor(fence=RecordingFence(events))
        out_of_fds = OSError(errno.EMFILE, "Too many open files")
        with mock.patch("jobsched.worker.process.os.pidfd_open", side_effect=out_of_fds):
            result = await executor.run(new_spec(command))
        self.assertEqual(
            (result.status, result.exit_code, result.error),
            (JobStatus.FAILED, None, "Could not start the job: [Errno 24] Too many open files"),
        )
        [(started, token, _kind, target, _label), ended] = events
        self.assertEqual((started, ended), ("started", ("ended", token)))
        self.assertEqual(target, str(self.spawned.pids[0]))
        await wait_until(
            lambda: not live_processes_mentioning(command),
            lambda: f"unwatched `{command}` still running: {live_processes_mentioning(command)}",
        )

    async def test_out_of_descriptors_before_the_spawn_starts_nothing_and_leaks_nothing(
        self,
    ) -> None:
        """The second pipe cannot be made: the job fails to start, no child is spawned
        and the first pipe is closed again."""
        executor = self.make_executor()
        real_pipe = os.pipe
        made = []

        def one_pipe_then_none():
            if made:
                raise OSError(errno.EMFILE, "Too many open files")
            made.extend(real_pipe())
            return tuple(made)

        with mock.patch("jobsched.worker.process.os.pipe", side_effect=one_pipe_then_none):
            result = await executor.run(new_spec("echo never"))
        self.assertEqual(
            (result.status, result.error),
            (JobStatus.FAILED, "Could not start the job: [Errno 24] Too many open files"),
        )
        self.assertEqual(self.spawned.pids, [])
        for fd in made:
            self.assertRaises(OSError, os.fstat, fd)

    async def test_a_failed_spawn_leaves_no_pipe_open(self) -> None:
        """The spawn itself fails: the job fails to start with the OS's reason, and
        the three pipes made for it are closed at both ends."""
        given = []

        def failing_spawn(argv, env, stdin, stdout, stderr):
            given.extend((stdin, stdout, stderr))
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")

        executor = ProcessExecutor(self.reactor, spawn=failing_spawn)
        self.addCleanup(executor.stop)
        pipes = []
        real_pipe = os.pipe

        def recorded_pipe():
            pipes.extend(real_pipe())
            return tuple(pipes[-2:])

        with mock.patch("jobsched.worker.process.os.pipe", side_effect=recorded_pipe):
            result = await executor.run(new_spec("true"))
        self.assertEqual(
            (result.status, result.error),
            (JobStatus.FAILED, "Could not start the job: [Errno 2] No such file or directory"),
        )
        self.assertEqual(len(pipes), 6)
        # the gate's read end and the outputs' write ends went to the child
        self.assertEqual(given, [pipes[0], pipes[3], pipes[5]])
        for fd in pipes:
            self.assertRaises(OSError, os.fstat, fd)


def _kill_and_reap(child) -> None:
    """Teardown for a child spawned outside an executor (a no-op once it has exited)."""
    if child.poll() is None:
        child.kill()
        child.wait(timeout=PROMPTLY)


class PausedAtRegistration(RecordingFence):
    """A fence whose node stops as it registers a run, the moment a SIGSTOP could land
    between the spawn and the keeper's message: it holds the reactor until `marker`
    appears or `seconds` pass, and records whether the marker was there."""

    def __init__(self, events, marker: Path, seconds: float) -> None:
        super().__init__(events)
        self.marker = marker
        self.seconds = seconds

    def run_started(self, kind, target, label):
        deadline = time.monotonic() + self.seconds
        while not self.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.events.append(("marker while registering", self.marker.exists()))
        return super().run_started(kind, target, label)


class LeaseOutWhileStarting(PausedAtRegistration):
    """A fence whose lease ran out while its node was stopped starting a run."""

    def lease_expired(self):
        return True


class GateTests(ProcessExecutorTestCase):
    """A child runs nothing of its command until the node has registered its run."""

    async def test_nothing_runs_while_the_node_stops_before_registering_the_run(self) -> None:
        marker = self.pidfile().with_name("ran")
        events = []
        fence = PausedAtRegistration(events, marker, seconds=1.0)
        executor = self.make_executor(fence=fence)
        result = await executor.run(new_spec(f"echo ran > {shlex.quote(str(marker))}"))
        self.assertEqual(events[0], ("marker while registering", False))
        self.assertEqual(result.status, JobStatus.COMPLETED)
        self.assertTrue(marker.exists())

    async def test_a_run_started_after_the_lease_ran_out_runs_nothing(self) -> None:
        """Paused after the assignment was applied, for longer than the lease: the
        leader may have given the job to another node, so its command must not run
        even for the moment the keeper would take to kill it."""
        marker = self.pidfile().with_name("ran")
        events = []
        fence = LeaseOutWhileStarting(events, marker, seconds=0.2)
        executor = self.make_executor(fence=fence)
        result = await executor.run(new_spec(f"echo ran > {shlex.quote(str(marker))}"))
        self.assertEqual((result.status, result.error), (JobStatus.FAILED, LEASE_RAN_OUT))
        self.assertEqual(
            [event[0] for event in events], ["marker while registering", "started", "ended"]
        )
        self.assertFalse(marker.exists())

    def test_a_child_whose_node_is_gone_before_the_go_ahead_runs_nothing(self) -> None:
        marker = self.pidfile().with_name("ran")
        gate_read, gate_write = os.pipe()
        with open(os.devnull, "wb") as sink:
            child = spawn_job(
                ["sh", "-c", GATE + f"echo ran > {shlex.quote(str(marker))}"],
                {"PATH": os.defpath},
                gate_read,
                sink.fileno(),
                sink.fileno(),
            )
        self.addCleanup(_kill_and_reap, child)
        os.close(gate_read)
        os.close(gate_write)  # the node's end, as its death closes it
        self.assertEqual(child.wait(timeout=PROMPTLY), 1)
        self.assertFalse(marker.exists())

    async def test_the_command_reads_end_of_file_from_its_stdin(self) -> None:
        result = await self.make_executor().run(new_spec("readlink /proc/$$/fd/0; cat"))
        self.assertEqual((result.status, result.output), (JobStatus.COMPLETED, "/dev/null\n"))
