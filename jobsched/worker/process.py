"""ProcessExecutor: runs each job as a local child process (development only, §5).

There is no isolation: a job runs as the node's user, on the node's filesystem. It runs
`setsid sh -c <command>`, so the job is a process group of its own (pgid == pid) and a
timeout, a cancel or the end of the shell kills every process it started. Each group is
registered with the fence as it starts, so the fence keeper kills it if this node dies
or loses its lease. Everything happens on the reactor (spawnProcess and timers of the
injected reactor); nothing blocks.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from jobsched.interfaces import IExecutor, IFence
from jobsched.jobs.model import JobResult, JobSpec
from jobsched.worker.fence import Unfenced
from jobsched.worker.fence_keeper import PROCESS_GROUP
from jobsched.worker.live_output import STDERR, STDOUT, LiveOutput, LiveOutputs
from jobsched.worker.results import (
    CANCELLED,
    STOPPED,
    CappedBuffer,
    exited,
    killed,
    now_ms,
    timed_out_message,
)


def _kill_group(pgid: int) -> None:
    """Kill the job's leader process and its process group.

    The leader is killed by pid as well: right after the spawn it may not have called
    setsid yet, so its group does not exist and killpg alone would miss it (and the
    shell it is about to become). Our child's pid cannot be reused before we reap it.
    """
    if pgid <= 0:  # killpg(0) would kill the node's own process group
        return
    for kill in (os.kill, os.killpg):
        try:
            kill(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _JobProcess(ProcessProtocol):
    """Collects one job's capped stdout and stderr, hands them to its live output as
    they come, and fires `ended` once all is read."""

    def __init__(self, max_output_bytes: int, live: LiveOutput) -> None:
        self.stdout = CappedBuffer(max_output_bytes)
        self.stderr = CappedBuffer(max_output_bytes)
        self.live = live
        self.ended: Deferred = Deferred()
        self.pgid = 0

    def connectionMade(self) -> None:
        self.pgid = self.transport.pid
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.stdout.write(data)  # past the cap the data is dropped, the pipe still drained
        self.live.write(STDOUT, data)

    def errReceived(self, data: bytes) -> None:
        self.stderr.write(data)
        self.live.write(STDERR, data)

    def processExited(self, reason: Failure) -> None:
        # Background children of the shell would keep the pipes (and the job) open.
        _kill_group(self.pgid)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)


@dataclass
class _Attempt:
    process: _JobProcess
    started_at_ms: int
    fence_token: int
    timer: IDelayedCall | None = None
    reason: str = ""
    timed_out: bool = False

    def interrupt(self, reason: str, timed_out: bool = False) -> None:
        """Kill the job; the first reason given is the one its result reports."""
        if not self.reason:
            self.reason = reason
            self.timed_out = timed_out
        _kill_group(self.process.pgid)

    def time_out(self, timeout_seconds: int) -> None:
        self.interrupt(timed_out_message(timeout_seconds), timed_out=True)


@implementer(IExecutor)
class ProcessExecutor:
    """Runs `sh -c <command>` as a child process in its own process group; no image."""

    name = "process"
    log = Logger()

    def __init__(
        self,
        reactor: IReactorProcess,
        *,
        max_output_bytes: int = 65536,
        fence: IFence | None = None,
        live_output: LiveOutputs | None = None,
    ) -> None:
        """`reactor` must provide IReactorProcess and IReactorTime (for timeouts); the
        output of each run goes to `live_output` as it comes."""
        setsid = shutil.which("setsid")
        if setsid is None:
            raise RuntimeError("the process executor needs `setsid` (util-linux) on PATH")
        self._setsid = setsid
        self._reactor = reactor
        self._max_output_bytes = max_output_bytes
        self._fence = fence if fence is not None else Unfenced()
        self._live = (
            live_output if live_output is not None else LiveOutputs(reactor, max_output_bytes)
        )
        # Jobs get PATH only, not the node's environment (which may hold secrets).
        self._env = {"PATH": os.environ.get("PATH", os.defpath)}
        self._attempts: dict[str, _Attempt] = {}
        self._idle_waiters: list[Deferred] = []
        self._stopping = False

    def start(self) -> Deferred:
        self.log.warn(
            "Executor `process`: jobs run as this node's user with NO isolation "
            "(no container, no limits, job images recorded but not used); "
            "use it for development only"
        )
        return succeed(None)

    def stop(self) -> Deferred:
        """Kill every running job's process group; fire once all their runs ended."""
        self._stopping = True
        for attempt in list(self._attempts.values()):
            attempt.interrupt(STOPPED)
        if not self._attempts:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def run(self, spec: JobSpec) -> Deferred:
        """Run one attempt; fires with a JobResult (FAILED for any job-level failure)."""
        if self._stopping:
            return succeed(killed(STOPPED, None, None))
        if spec.job_id in self._attempts:
            return fail(ValueError(f"job {spec.job_id} is already running here"))
        live = self._live.open(spec.job_id, spec.attempt)
        process = _JobProcess(self._max_output_bytes, live)
        started_at_ms = now_ms()
        try:
            self._reactor.spawnProcess(
                process, self._setsid, [self._setsid, "sh", "-c", spec.command], env=self._env
            )
        except OSError as exc:
            live.close()
            return succeed(killed(f"Could not start the job: {exc}", None, None))
        token = self._fence.run_started(PROCESS_GROUP, str(process.pgid), spec.job_id)
        attempt = _Attempt(process, started_at_ms, token)
        if spec.timeout_seconds > 0:
            attempt.timer = self._reactor.callLater(
                spec.timeout_seconds, attempt.time_out, spec.timeout_seconds
            )
        self._attempts[spec.job_id] = attempt
        delivered: Deferred = Deferred()
        process.ended.addCallback(self._finished, spec.job_id, attempt, delivered)
        return delivered

    def cancel(self, job_id: str) -> Deferred:
        """Kill the job's process group; its run() then fires with a FAILED `Cancelled`."""
        attempt = self._attempts.get(job_id)
        if attempt is not None:
            attempt.interrupt(CANCELLED)
        return succeed(None)

    def remove_leftovers(self) -> Deferred:
        """Nothing to find: this executor keeps no record of jobs across restarts."""
        return succeed([])

    def _finished(
        self, reason: ProcessTerminated, job_id: str, attempt: _Attempt, delivered: Deferred
    ) -> None:
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        del self._attempts[job_id]
        attempt.process.live.close()
        self._fence.run_ended(attempt.fence_token)
        delivered.callback(self._result(reason, attempt))
        # Only now: whoever waits for idleness may look at the results.
        if not self._attempts:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _result(self, reason: ProcessTerminated, attempt: _Attempt) -> JobResult:
        process = attempt.process
        # ProcessDone or ProcessTerminated; a signal maps to 128+n as in the shell.
        exit_code = reason.exitCode if reason.exitCode is not None else 128 + reason.signal
        if attempt.reason and exit_code != 0:
            return killed(attempt.reason, process.stdout, attempt.started_at_ms, attempt.timed_out)
        return exited(exit_code, process.stdout, process.stderr, attempt.started_at_ms)
