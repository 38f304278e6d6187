"""ProcessExecutor: the shared behaviour table, timeouts, cancel and process groups."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from jobsched.interfaces import IExecutor
from jobsched.jobs.model import JobStatus
from jobsched.worker.process import ProcessExecutor
from tests.executor_cases import CASES, Case, check_result, new_spec

# A shell that leaves a background child, records its pid (== its process group) and waits.
GROUP_COMMAND = "sleep 60 & echo $$ > {pidfile}; echo started; wait"


@pytest.fixture
def executors():
    """Makes ProcessExecutors; stops them all at teardown."""
    made = []

    def make(**options) -> ProcessExecutor:
        executor = ProcessExecutor(reactor, **options)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        pytest_twisted.blockon(executor.stop())


async def group_gone(pgid: int, timeout: float = 2.0) -> None:
    """Wait until no live process is left in group `pgid` (SIGKILL is delivered
    asynchronously: a killed process may still be running for a moment)."""
    deadline = time.monotonic() + timeout
    while live_group_members(pgid):
        assert time.monotonic() < deadline, f"group {pgid} still has {live_group_members(pgid)}"
        await deferLater(reactor, 0.02, lambda: None)


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


async def wait_for_pid(pidfile: Path, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, f"{pidfile} was not written in {timeout}s"
        await deferLater(reactor, 0.02, lambda: None)
    return int(pidfile.read_text())


def test_provides_iexecutor():
    executor = ProcessExecutor(reactor)
    assert verifyObject(IExecutor, executor)
    assert executor.name == "process"


@pytest.mark.parametrize("case", [pytest.param(c, id=i) for i, c in CASES.items()])
@pytest_twisted.ensureDeferred
async def test_behaviour_table(executors, case: Case):
    executor = executors(max_output_bytes=case.max_output_bytes)
    await executor.start()
    result = await executor.run(new_spec(case.command))
    check_result(result, case)


@pytest_twisted.ensureDeferred
async def test_image_is_ignored(executors):
    executor = executors()
    result = await executor.run(new_spec("echo hi", image="jobsched-test/nope:latest"))
    assert (result.status, result.output) == (JobStatus.COMPLETED, "hi\n")


@pytest_twisted.ensureDeferred
async def test_node_environment_is_not_passed(executors, monkeypatch):
    monkeypatch.setenv("JOBSCHED_TEST_SECRET", "s3cret")
    executor = executors()
    result = await executor.run(new_spec('echo "[$JOBSCHED_TEST_SECRET]"'))
    assert result.output == "[]\n"


@pytest_twisted.ensureDeferred
async def test_timeout_kills_the_whole_group(executors, tmp_path):
    executor = executors()
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    result = await executor.run(new_spec(GROUP_COMMAND.format(pidfile=pidfile), timeout_seconds=2))
    assert 2 <= time.monotonic() - started < 4
    assert result.status == JobStatus.FAILED
    assert result.exit_code is None
    assert result.error == "Timed out after 2s"
    assert result.output == "started\n"
    await group_gone(int(pidfile.read_text()))


@pytest_twisted.ensureDeferred
async def test_cancel_kills_the_whole_group(executors, tmp_path):
    executor = executors()
    pidfile = tmp_path / "pid"
    spec = new_spec(GROUP_COMMAND.format(pidfile=pidfile))
    running = executor.run(spec)
    pgid = await wait_for_pid(pidfile)
    assert len(live_group_members(pgid)) == 2
    cancelled_at = time.monotonic()
    await executor.cancel(spec.job_id)
    result = await running
    assert time.monotonic() - cancelled_at < 2
    assert (result.status, result.exit_code, result.error) == (JobStatus.FAILED, None, "Cancelled")
    await group_gone(pgid)


@pytest_twisted.ensureDeferred
async def test_cancel_of_unknown_job_is_harmless(executors):
    await executors().cancel(new_spec("true").job_id)


@pytest_twisted.ensureDeferred
async def test_background_children_die_when_the_shell_exits(executors, tmp_path):
    executor = executors()
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    result = await executor.run(new_spec(f"sleep 60 & echo $$ > {pidfile}"))
    assert time.monotonic() - started < 2
    assert (result.status, result.exit_code) == (JobStatus.COMPLETED, 0)
    await group_gone(int(pidfile.read_text()))


@pytest_twisted.ensureDeferred
async def test_stop_kills_running_jobs_and_refuses_new_ones(executors, tmp_path):
    executor = executors()
    pidfile = tmp_path / "pid"
    running = executor.run(new_spec(GROUP_COMMAND.format(pidfile=pidfile)))
    pgid = await wait_for_pid(pidfile)
    await executor.stop()
    result = await running
    assert (result.status, result.exit_code, result.error) == (
        JobStatus.FAILED,
        None,
        "Executor stopped",
    )
    await group_gone(pgid)
    late = await executor.run(new_spec("echo late"))
    assert (late.status, late.error) == (JobStatus.FAILED, "Executor stopped")


@pytest_twisted.ensureDeferred
async def test_remove_leftovers_finds_nothing(executors):
    assert await executors().remove_leftovers() == []


def processes_running(command_line: str) -> list[int]:
    """Pids of live processes whose command line is exactly `command_line`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").strip()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline.decode(errors="replace") == command_line and state != "Z":
            found.append(int(entry))
    return found


@pytest_twisted.ensureDeferred
async def test_cancel_right_after_start_leaves_nothing_running(executors):
    """A cancel that lands before the child has made its process group still kills it
    (it would otherwise go on as `sh`, then the command, untouched)."""
    executor = executors()
    for _attempt in range(20):
        spec = new_spec("sleep 61.5")
        running = executor.run(spec)
        await executor.cancel(spec.job_id)
        result = await running.addTimeout(5, reactor)
        assert result.error == "Cancelled"
    deadline = time.monotonic() + 2
    while processes_running("sleep 61.5"):
        assert time.monotonic() < deadline, "a cancelled job is still running"
        await deferLater(reactor, 0.02, lambda: None)
