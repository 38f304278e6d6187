"""Fence: this node's lease on the jobs it runs, and the keeper process enforcing it.

The HeartbeatSender extends the lease (docs/reliability.md, "Fencing", has the rules);
the executors register each run as it starts and unregister it when it ends. All of it
goes to the fence keeper (`jobsched/worker/fence_keeper.py`), a child process reading
a pipe, which kills the runs when the lease runs out (plus KEEPER_GRACE_SECONDS, so a
running node fences itself first) or when the node dies. The leader waits
FENCE_MARGIN_SECONDS past the worker expiry before it gives a lost worker's jobs to
others, so the keeper has always acted by then.

Messages are written to the pipe synchronously (a few dozen bytes, atomic, far below
the pipe's buffer): a run is registered before the call that started it returns.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from zope.interface import implementer

import jobsched
from jobsched.interfaces import IFence
from jobsched.worker.fence_keeper import LOG_FD as KEEPER_LOG_FD

KEEPER_GRACE_SECONDS = 0.2
LEASE_LINE_STEP_SECONDS = 0.05
"""The keeper hears of a longer lease once it moved this much (a leader extends its
lease at every commit): its deadline lags by less, well within the grace, so it only
ever kills earlier and the node still fences itself first."""
FENCE_MARGIN_SECONDS = 1.0
KEEPER_STOP_SECONDS = 5.0
KEEPER_RESPAWN_SECONDS = 1.0
KEEPER_MODULE = "jobsched.worker.fence_keeper"


def _keeper_environment() -> dict[str, str]:
    """The node's environment, with the directory this package was imported from first
    on PYTHONPATH: the keeper runs the node's own code."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(jobsched.__file__)))
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, *([path] if path else [])]))


class _KeeperProtocol(ProcessProtocol):
    """One life of the keeper process: logs what it says, tells its owner it ended."""

    log = Logger()

    def __init__(self, ended: Callable[..., None]) -> None:
        self._ended = ended
        self._pending = b""

    def outReceived(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            self.log.warn("Fence keeper: {line}", line=line.decode("utf-8", "replace"))

    def processEnded(self, reason) -> None:
        self._ended(self, reason)


class KeeperProcess:
    """Runs the fence keeper as a child process, and again if it ever dies while the
    node runs (then the whole state is sent again). The node holds the only write end
    of the keeper's stdin, so the keeper sees end of file as soon as the node dies."""

    log = Logger()

    def __init__(self, reactor: IReactorProcess) -> None:
        self._reactor = reactor
        self._state: Callable[[], list[str]] = list
        self._protocol: _KeeperProtocol | None = None
        self._write_fd: int | None = None
        self._stopped: defer.Deferred | None = None
        self._respawn = None

    def start(self, state: Callable[[], list[str]]) -> None:
        """Spawn the keeper; `state()` gives the lines that bring a new keeper up to date."""
        self._state = state
        self._spawn()

    def send(self, line: str) -> None:
        if self._write_fd is None:
            return
        try:
            os.write(self._write_fd, (line + "\n").encode())
        except OSError as error:  # the keeper died: processEnded starts another
            self.log.error("Could not write to the fence keeper: {error}", error=error)

    def stop(self) -> defer.Deferred:
        """Close the pipe (the keeper kills what is still registered and exits); fires
        once it has exited (killed if it takes longer than KEEPER_STOP_SECONDS)."""
        if self._respawn is not None and self._respawn.active():
            self._respawn.cancel()
        if self._protocol is None:
            return defer.succeed(None)
        self._stopped = defer.Deferred()
        protocol = self._protocol
        self._close_pipe()
        timer = self._reactor.callLater(KEEPER_STOP_SECONDS, self._kill, protocol)
        self._stopped.addBoth(self._cancel_timer, timer)
        return self._stopped

    def _spawn(self) -> None:
        read_fd, self._write_fd = os.pipe()
        protocol = _KeeperProtocol(self._ended)
        try:
            self._reactor.spawnProcess(
                protocol,
                sys.executable,
                [sys.executable, "-m", KEEPER_MODULE],
                env=_keeper_environment(),
                childFDs={0: read_fd, 1: "r", 2: 2, KEEPER_LOG_FD: 1},
            )
        finally:
            os.close(read_fd)
        self._protocol = protocol
        for line in self._state():
            self.send(line)

    def _ended(self, protocol: _KeeperProtocol, reason) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._close_pipe()
        if self._stopped is not None:
            self._stopped.callback(None)
            return
        self.log.error("The fence keeper exited ({reason}); starting it again", reason=reason.value)
        self._respawn = self._reactor.callLater(KEEPER_RESPAWN_SECONDS, self._spawn_again)

    def _spawn_again(self) -> None:
        try:
            self._spawn()
        except OSError as error:
            self._close_pipe()
            self.log.error("Could not start the fence keeper: {error}", error=error)
            self._respawn = self._reactor.callLater(KEEPER_RESPAWN_SECONDS, self._spawn_again)

    def _close_pipe(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None

    def _kill(self, protocol: _KeeperProtocol) -> None:
        self.log.error("The fence keeper did not exit; killing it")
        try:
            protocol.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    @staticmethod
    def _cancel_timer(result, timer):
        if timer.active():
            timer.cancel()
        return result


@implementer(IFence)
class Fence(Service):
    """The lease (in the reactor's seconds) and the registered runs, mirrored to the
    keeper, whose deadlines are CLOCK_MONOTONIC (the keeper shares this host)."""

    def __init__(
        self,
        clock: IReactorTime,
        keeper: KeeperProcess,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._keeper = keeper
        self._monotonic = monotonic
        self._until = -math.inf
        self._until_told = -math.inf  # the lease the keeper last heard of
        self._runs: dict[int, str] = {}
        self._tokens = itertools.count(1)
        self._lost_listeners: list[Callable[[], None]] = []

    def startService(self) -> None:
        super().startService()
        self._keeper.start(self._state_lines)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return self._keeper.stop()

    def add_lost_listener(self, listener: Callable[[], None]) -> None:
        """`listener()` is called when a run ends after the lease ran out."""
        self._lost_listeners.append(listener)

    def extend_lease(self, until: float) -> None:
        if until <= self._until:
            return
        self._until = until
        if until - self._until_told >= LEASE_LINE_STEP_SECONDS:
            self._until_told = until
            self._keeper.send(self._lease_line())

    def lease_expired(self) -> bool:
        return self._clock.seconds() >= self._until

    def run_started(self, kind: str, target: str, label: str) -> int:
        token = next(self._tokens)
        line = self._runs[token] = f"run {token} {kind} {target} {label}"
        self._keeper.send(line)
        return token

    def run_ended(self, token: int) -> None:
        if self._runs.pop(token, None) is None:
            return
        self._keeper.send(f"end {token}")
        if self.lease_expired():
            for listener in self._lost_listeners:
                listener()

    def _lease_line(self) -> str:
        remaining = self._until - self._clock.seconds()
        return f"lease {self._monotonic() + remaining + KEEPER_GRACE_SECONDS:.6f}"

    def _state_lines(self) -> list[str]:
        lease = [self._lease_line()] if self._until > -math.inf else []
        return lease + list(self._runs.values())


@implementer(IFence)
class Unfenced:
    """No keeper and a lease that never runs out: executors built without a fence
    (tools, tests of the executor alone)."""

    def extend_lease(self, until: float) -> None:
        pass

    def lease_expired(self) -> bool:
        return False

    def run_started(self, kind: str, target: str, label: str) -> int:
        return 0

    def run_ended(self, token: int) -> None:
        pass
