"""The fence keeper: a tiny process beside each node that kills the node's job runs
when the node's lease runs out, or at once when the node dies.

A paused or dead node cannot stop the jobs it started (they are processes and
containers of their own); this process can. The node spawns it at start-up
(`python -m jobsched.worker.fence_keeper`) and talks to it over its stdin, one line
per message:

    lease <deadline>                       runs may live until CLOCK_MONOTONIC <deadline>
    run <id> <kind> <target> <label>       a run started: kind `pgid` (a process group)
                                           or `container` (a container name)
    end <id>                               that run ended

When the deadline passes, the keeper kills every registered run; while the lease is
out, a run registered is killed at once. While the lease holds, it reads the pipe at
most every GATHER_SECONDS (never past the deadline), so that a node starting many
short jobs does not wake it for every line. A container registered before it exists is
looked for again every KILL_RETRY_SECONDS while the lease stays out. When the node's
end of the pipe closes (the node died, however), the keeper kills every run it still
holds, looks for missing containers for GIVE_UP_SECONDS more, and exits. Each kill is
one line: on stdout (the node logs it) after a lease ran out, and after the node died
on LOG_FD, the node's own standard output (its log under `twistd -n`). It imports
nothing of Twisted, and Docker only once a container is registered, so it starts fast
and depends on little.
"""

from __future__ import annotations

import math
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

PROCESS_GROUP = "pgid"
CONTAINER = "container"
DOCKER_TIMEOUT_SECONDS = 5
KILL_RETRY_SECONDS = 0.5
GIVE_UP_SECONDS = 3.0
GATHER_SECONDS = 0.02
LEASE_RAN_OUT = "the node's lease ran out"
STARTED_WITHOUT_LEASE = "started while the lease was out"
NODE_DIED = "the node died"


@dataclass
class _Run:
    kind: str
    target: str
    label: str
    killed: bool = False
    retry_at: float = -math.inf
    failed_before: bool = False

    def describe(self) -> str:
        where = "process group" if self.kind == PROCESS_GROUP else self.kind
        return f"job {self.label} ({where} {self.target})"


class Killer(Protocol):
    """Kills runs of one kind."""

    def prepare(self) -> None:
        """A run of this kind was registered: get ready to kill it fast."""

    def kill(self, target: str) -> bool:
        """Kill `target` so that nothing of it is left; False if it does not exist yet
        (it may still appear)."""


class FenceKeeper:
    """The keeper's logic, without I/O: fed lines and times, it calls the killers."""

    def __init__(
        self,
        killers: dict[str, Killer],
        report: Callable[[str], None],
        last_words: Callable[[str], None],
    ) -> None:
        """`report` tells the node of a kill; `last_words` is for after it died."""
        self._killers = killers
        self._report = report
        self._deadline = -math.inf  # no lease yet: nothing may run
        self._runs: dict[str, _Run] = {}
        self._last_words = last_words
        self._gone_at: float | None = None

    def handle(self, line: str, now: float) -> None:
        """One message from the node."""
        words = line.split()
        try:
            if words[0] == "lease" and len(words) == 2:
                self._deadline = float(words[1])
            elif words[0] == "run" and len(words) == 5 and words[2] in self._killers:
                run = self._runs[words[1]] = _Run(words[2], words[3], words[4])
                self._prepare(run)
                if now >= self._deadline:
                    self._kill(run, now, STARTED_WITHOUT_LEASE)
            elif words[0] == "end" and len(words) == 2:
                self._runs.pop(words[1], None)
            else:
                raise ValueError(line)
        except (IndexError, ValueError):
            self._report(f"ignored a message it does not understand: {line!r}")

    def check(self, now: float) -> None:
        """Once the lease has run out, kill every run still alive (each due retry)."""
        if now < self._deadline:
            return
        reason = LEASE_RAN_OUT if self._gone_at is None else NODE_DIED
        for run in list(self._runs.values()):
            if not run.killed and now >= run.retry_at:
                self._kill(run, now, reason)

    def wait_seconds(self, now: float) -> float | None:
        """How long until check() has work (None: nothing to do until a message)."""
        pending = [run.retry_at for run in self._runs.values() if not run.killed]
        if not pending or self.done(now):
            return None
        return max(0.0, self._deadline - now, min(pending) - now)

    def gather_seconds(self, now: float) -> float:
        """How long the keeper may leave messages in the pipe after reading some: up to
        GATHER_SECONDS while the lease holds (a drain of short jobs writes two lines a
        job, and waking for each cost the keeper more CPU than the node spent writing
        them); none once it ran out, so that a run registered then dies at once."""
        return max(0.0, min(GATHER_SECONDS, self._deadline - now))

    def node_gone(self, now: float) -> None:
        """The node's end of the pipe closed: everything it left running must die."""
        self._gone_at = now
        self._deadline = -math.inf
        self._report = self._last_words
        self.check(now)

    def done(self, now: float) -> bool:
        """After the node died: nothing left to kill, or no more looking."""
        if self._gone_at is None:
            return False
        nothing_left = all(run.killed for run in self._runs.values())
        return nothing_left or now >= self._gone_at + GIVE_UP_SECONDS

    def _prepare(self, run: _Run) -> None:
        try:
            self._killers[run.kind].prepare()
        except Exception as error:  # the kill will try again
            self._report(f"not ready to kill {run.describe()}: {error}")

    def _kill(self, run: _Run, now: float, reason: str) -> None:
        try:
            found = self._killers[run.kind].kill(run.target)
        except Exception as error:  # the keeper must outlive a failed kill, and retry
            if not run.failed_before:
                self._report(f"could not kill {run.describe()} ({reason}): {error}")
            run.failed_before = True
            found = False
        else:
            if found:
                self._report(f"killed {run.describe()}: {reason}")
        run.killed = found
        run.retry_at = now + KILL_RETRY_SECONDS


class ProcessGroupKiller:
    """SIGKILLs the run's leader process and its process group (the leader may not have
    made its group yet when the kill comes right after the spawn). A group is
    registered once spawned: if it is gone, it is dead."""

    def prepare(self) -> None:
        pass

    def kill(self, target: str) -> bool:
        pgid = int(target)
        if pgid <= 1:
            raise ValueError(f"refusing to kill process group {pgid}")
        for kill in (os.kill, os.killpg):
            try:
                kill(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return True


class ContainerKiller:
    """Kills containers through the Docker engine (the quick part that stops the job),
    then removes them, so that none can be started afterwards either. The SDK is
    imported and the engine reached when the first container is registered, not when
    the first kill is due."""

    def __init__(self) -> None:
        self._client = None

    def prepare(self) -> None:
        if self._client is None:
            import docker

            self._client = docker.from_env(timeout=DOCKER_TIMEOUT_SECONDS)

    def kill(self, name: str) -> bool:
        import docker.errors

        self.prepare()
        try:
            self._client.api.kill(name)
        except docker.errors.NotFound:
            return False  # not created yet (or removed already)
        except docker.errors.APIError as error:
            if error.status_code != 409:  # 409: created, not running
                raise
        try:
            self._client.api.remove_container(name, force=True)
        except docker.errors.NotFound:
            pass
        return True


class LineBuffer:
    """Splits bytes read from the pipe into complete lines."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        *lines, self._pending = (self._pending + data).split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines if line.strip()]


def _writer(stream, prefix: str = "") -> Callable[[str], None]:
    def write(message: str) -> None:
        try:
            stream.write(f"{prefix}{message}\n")
            stream.flush()
        except OSError:
            pass  # the node's end is gone; the kill itself is what matters

    return write


LOG_FD = 3
"""The node's standard output, handed to the keeper: where its kills go once the node
is gone (the node's own error line stays alone on its stderr)."""


def _node_log():
    try:
        return os.fdopen(LOG_FD, "w")
    except OSError:  # started by hand, without the node's log
        return sys.stderr


def run(stdin_fd: int = 0, monotonic: Callable[[], float] = time.monotonic) -> None:
    """The keeper's loop: read the node's messages, kill on time, exit with the node."""
    keeper = FenceKeeper(
        {PROCESS_GROUP: ProcessGroupKiller(), CONTAINER: ContainerKiller()},
        report=_writer(sys.stdout),
        last_words=_writer(_node_log(), "jobsched fence keeper: "),
    )
    lines = LineBuffer()
    while True:
        readable, _, _ = select.select([stdin_fd], [], [], keeper.wait_seconds(monotonic()))
        if readable:
            data = os.read(stdin_fd, 65536)
            if not data:
                break
            for line in lines.feed(data):
                keeper.handle(line, monotonic())
        keeper.check(monotonic())
        if readable:  # let the node's next lines gather in the pipe (not past the lease)
            time.sleep(keeper.gather_seconds(monotonic()))
    keeper.node_gone(monotonic())
    while (wait := keeper.wait_seconds(monotonic())) is not None:
        time.sleep(wait)
        keeper.check(monotonic())


def main() -> None:
    # A session of its own: a signal to the node's process group (Ctrl-C, Ctrl-Z in a
    # terminal) must not stop the keeper; the node's death reaches it as end of file.
    try:
        os.setsid()
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run()


if __name__ == "__main__":
    main()
