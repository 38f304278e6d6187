"""ProcessExecutor: runs each job as a local child process (development only, §5).

There is no isolation: a job runs as the node's user, on the node's filesystem. It runs
`sh -c <command>` in a session of its own (so the job is a process group, pgid == pid,
and a timeout, a cancel or the end of the shell kills every process it started). Each
group is registered with the fence as it starts, so the fence keeper kills it if this
node dies or loses its lease.

The child is started by `subprocess.Popen` (fork/exec in C, the new session made in the
child: no `setsid` program to exec) on pipes the executor makes (cheaper than Popen's
file objects, which it would only close); the reactor reads its stdout and stderr
pipes and learns of its exit through a pidfd (all of them behind one epoll:
worker/descriptors.py), so nothing blocks and no SIGCHLD is needed.

The child's shell runs nothing of the command until the node has told the fence keeper
of it: it first waits on its stdin, a pipe, for the node's go-ahead (GATE). A node
stopped or killed between the spawn and that message would otherwise leave a child
running that no keeper knows of (docs/reliability.md, "A pause during a spawn").
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet
from twisted.logger import Logger
from zope.interface import implementer

from jobsched.interfaces import IExecutor, IFence
from jobsched.jobs.model import JobResult, JobSpec
from jobsched.worker.descriptors import JobDescriptors
from jobsched.worker.fence import Unfenced
from jobsched.worker.fence_keeper import PROCESS_GROUP
from jobsched.worker.live_output import STDERR, STDOUT, LiveOutput, LiveOutputs
from jobsched.worker.results import (
    CANCELLED,
    LEASE_RAN_OUT,
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


GATE = "read -r _ || exit 1; exec </dev/null; "
"""Put before each command, on its first line: the shell reads one line from its stdin
(the gate pipe) before anything else, exits without running the command if the pipe
ends first (the node died, or gave up on the job), and gives the command /dev/null as
its stdin."""

Spawn = Callable[[list[str], dict, int, int, int], subprocess.Popen]


def spawn_job(argv: list[str], env: dict, stdin: int, stdout: int, stderr: int) -> subprocess.Popen:
    """Start `argv` in a new session on the given descriptors (the gate pipe's read end,
    the write ends of the output pipes)."""
    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=env,
        start_new_session=True,
        close_fds=True,
    )


def _pipes() -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Three pipes (read end, write end) for a child's gate, stdout and stderr;
    OSError, with none left open, if the node is out of descriptors."""
    made: list[tuple[int, int]] = []
    try:
        for _ in range(3):
            made.append(os.pipe())
    except OSError:
        _close(*(fd for pair in made for fd in pair))
        raise
    return made[0], made[1], made[2]


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def _go_ahead(gate: int) -> None:
    """Let the child's shell run its command (it may be dead already: killed early)."""
    try:
        os.write(gate, b"\n")
    except OSError:
        pass
    finally:
        os.close(gate)


class _JobProcess:
    """One job's child: capped stdout and stderr (handed to its live output as they
    come), and `ended`, which fires with the exit code (128+n for a signal, as in the
    shell) once the child has exited and both of its pipes are closed."""

    def __init__(
        self, descriptors: JobDescriptors, max_output_bytes: int, live: LiveOutput
    ) -> None:
        self._descriptors = descriptors
        self.stdout = CappedBuffer(max_output_bytes)
        self.stderr = CappedBuffer(max_output_bytes)
        self.live = live
        self.ended: Deferred = Deferred()
        self.pgid = 0
        self._open = 0
        self._exit_code: int | None = None
        self._child: subprocess.Popen | None = None

    def watch(self, child: subprocess.Popen, out_fd: int, err_fd: int) -> None:
        """Watch the started `child`: its output (the read ends of its pipes, which
        this takes over) and its exit. OSError, with nothing watched and the pipes
        closed, if its exit cannot be watched (the node is out of descriptors)."""
        self._child = child
        self.pgid = child.pid
        try:
            exit_fd = os.pidfd_open(child.pid)
        except OSError:
            os.close(out_fd)
            os.close(err_fd)
            raise
        for fd, sink, stream in ((out_fd, self.stdout, STDOUT), (err_fd, self.stderr, STDERR)):
            os.set_blocking(fd, False)
            self._watch(fd, partial(self._read, sink, stream))
        self._watch(exit_fd, self._exited)

    def _watch(self, fd: int, on_read: Callable[[int], bool]) -> None:
        self._open += 1
        self._descriptors.watch(fd, on_read)

    def _read(self, sink: CappedBuffer, stream: str, fd: int) -> bool:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if data:
            sink.write(data)  # past the cap the data is dropped, the pipe still drained
            self.live.write(stream, data)
            return False
        self._closed()
        return True

    def _exited(self, _fd: int) -> bool:
        """The pidfd is readable: the child has exited and is a zombie until reaped, so
        its pid and process group cannot have been reused yet. Background children of
        the shell would keep the pipes (and the job) open: they are killed first, then
        the child is reaped."""
        _kill_group(self.pgid)
        pid, status = os.waitpid(self.pgid, os.WNOHANG)
        if pid == 0:  # never for a readable pidfd; wait for the next readiness
            return False
        self._exit_code = _shell_exit_code(os.waitstatus_to_exitcode(status))
        self._child.returncode = self._exit_code  # reaped here, not by Popen
        self._closed()
        return True

    def _closed(self) -> None:
        self._open -= 1
        if self._open == 0:
            self.ended.callback(self._exit_code)


def _shell_exit_code(code: int) -> int:
    """waitstatus_to_exitcode gives -n for a signal n; the shell reports 128+n."""
    return 128 - code if code < 0 else code


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
        reactor: IReactorFDSet,
        *,
        max_output_bytes: int = 65536,
        fence: IFence | None = None,
        live_output: LiveOutputs | None = None,
        spawn: Spawn = spawn_job,
    ) -> None:
        """`reactor` must provide IReactorFDSet and IReactorTime (for timeouts); the
        output of each run goes to `live_output` as it comes; `spawn` starts a child
        (tests record what they start)."""
        self._spawn = spawn
        self._live = (
            live_output if live_output is not None else LiveOutputs(reactor, max_output_bytes)
        )
        self._reactor = reactor
        self._descriptors = JobDescriptors(reactor)
        self._max_output_bytes = max_output_bytes
        self._fence = fence if fence is not None else Unfenced()
        # Jobs get PATH only, not the node's environment (which may hold secrets).
        self._env = {"PATH": os.environ.get("PATH", os.defpath)}
        # Found once: a child that searched PATH would try each directory in turn
        # while the node waits for its exec (docs/performance.md, eighth pass).
        self._shell = shutil.which("sh", path=self._env["PATH"]) or "sh"
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
        process = _JobProcess(self._descriptors, self._max_output_bytes, live)
        started_at_ms = now_ms()
        try:
            (gate_read, gate), (out_read, out_write), (err_read, err_write) = _pipes()
        except OSError as exc:
            live.close()
            return succeed(killed(f"Could not start the job: {exc}", None, None))
        argv = [self._shell, "-c", GATE + spec.command]
        try:
            child = self._spawn(argv, self._env, gate_read, out_write, err_write)
        except OSError as exc:
            _close(gate, out_read, err_read)
            live.close()
            return succeed(killed(f"Could not start the job: {exc}", None, None))
        finally:
            _close(gate_read, out_write, err_write)  # the child has its own copies
        # Fenced first, before anything else can fail or take time.
        token = self._fence.run_started(PROCESS_GROUP, str(child.pid), spec.job_id)
        if self._fence.lease_expired():
            # Paused since the assignment was applied, for longer than the lease: the
            # leader may have given the job to another node already. Its command never
            # runs (the keeper, told of the run only now, would kill it late).
            _close(gate, out_read, err_read)  # the shell exits without running it
            return self._abandon(child, token, live, LEASE_RAN_OUT)
        try:
            process.watch(child, out_read, err_read)
        except OSError as exc:  # a child nobody watches must not run on
            os.close(gate)  # the shell exits without running the command
            return self._abandon(child, token, live, f"Could not start the job: {exc}")
        _go_ahead(gate)
        attempt = _Attempt(process, started_at_ms, token)
        if spec.timeout_seconds > 0:
            attempt.timer = self._reactor.callLater(
                spec.timeout_seconds, attempt.time_out, spec.timeout_seconds
            )
        self._attempts[spec.job_id] = attempt
        delivered: Deferred = Deferred()
        process.ended.addCallback(self._finished, spec.job_id, attempt, delivered)
        return delivered

    def _abandon(self, child, token: int, live: LiveOutput, error: str) -> Deferred:
        """A child whose gate is closed (it runs nothing): killed, its run ended at the
        fence (which fences the worker if the lease ran out), a FAILED attempt."""
        _kill_group(child.pid)  # reaped by subprocess at a later Popen
        self._fence.run_ended(token)
        live.close()
        return succeed(killed(error, None, None))

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
        self, exit_code: int, job_id: str, attempt: _Attempt, delivered: Deferred
    ) -> None:
        if attempt.timer is not None and attempt.timer.active():
            attempt.timer.cancel()
        del self._attempts[job_id]
        attempt.process.live.close()
        self._fence.run_ended(attempt.fence_token)
        delivered.callback(self._result(exit_code, attempt))
        # Only now: whoever waits for idleness may look at the results.
        if not self._attempts:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _result(self, exit_code: int, attempt: _Attempt) -> JobResult:
        process = attempt.process
        if attempt.reason and exit_code != 0:
            return killed(attempt.reason, process.stdout, attempt.started_at_ms, attempt.timed_out)
        return exited(exit_code, process.stdout, process.stderr, attempt.started_at_ms)
