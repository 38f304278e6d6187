"""Running the `jobsched` command as a user does, from trial tests, and one cluster shared
by the tests of a class."""

from __future__ import annotations

import atexit
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import unittest as pyunit
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.nodeproc import REPO_ROOT, Cluster, Node, NodeFactory

CLI = [sys.executable, "-m", "jobsched.cli.main"]
CLI_DEADLINE = 90


def cli_environment(**extra: str) -> dict:
    """This checkout's code, no address or token from the caller's environment, and a
    fixed width for tables."""
    environ = dict(os.environ, PYTHONPATH=str(REPO_ROOT), COLUMNS="120")
    for name in ("JOBSCHED_ADDR", "JOBSCHED_TOKEN", "FORCE_COLOR", "NO_COLOR"):
        environ.pop(name, None)
    environ.update(extra)
    return environ


def run_cli(*args: str, timeout: float = CLI_DEADLINE, stdin_text: str | None = None, **env: str):
    """A Deferred of the CompletedProcess of `jobsched args...` (text, both streams);
    `stdin_text` is its standard input (else none)."""
    stdin = {"input": stdin_text} if stdin_text is not None else {"stdin": subprocess.DEVNULL}
    return deferToThread(
        subprocess.run,
        [*CLI, *args],
        env=cli_environment(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        **stdin,
    )


def addr(node: Node) -> list[str]:
    return ["-a", f"http://{node.grpc_address}"]


def parsed(result: subprocess.CompletedProcess) -> object:
    """The JSON document a `-o json` command printed."""
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"not JSON: {result}") from None


# Ctrl-C at a terminal interrupts; a suite started in the background by a shell without
# job control (`make test &`) ignores SIGINT, and its children inherit that, so the CLI
# is started with SIGINT back at its default (Python then turns it into
# KeyboardInterrupt) before it execs.
_WITH_DEFAULT_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
]


class TerminalRun:
    """`jobsched args...` with its stderr on a pseudo-terminal (stdout piped), so that it
    behaves as on a terminal; the test reads what it shows there."""

    def __init__(self, *args: str) -> None:
        self._master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [*_WITH_DEFAULT_SIGINT, *CLI[1:], *args],
            env=cli_environment(TERM="xterm"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            start_new_session=True,
        )
        os.close(slave)
        self.shown = ""

    def _read_until(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.shown and time.monotonic() < deadline:
            ready, _, _ = select.select([self._master], [], [], 0.2)
            if ready:
                try:
                    self.shown += os.read(self._master, 4096).decode(errors="replace")
                except OSError:  # the process closed the terminal
                    break
        return text in self.shown

    def read_until(self, text: str, timeout: float = 30):
        """A Deferred firing True once the terminal showed `text` (False at the deadline)."""
        return deferToThread(self._read_until, text, timeout)

    def finish(self, timeout: float = 30):
        """A Deferred of (exit code, stdout, everything the terminal showed)."""

        def wait():
            stdout, _ = self.process.communicate(timeout=timeout)
            self._read_until("\0never\0", 0.5)
            return self.process.returncode, stdout, self.shown

        return deferToThread(wait)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        os.close(self._master)


class SharedCluster:
    """One 3-node cluster (process executors) for all the tests of a TestCase class.

    Started by the first test that asks and killed by PID when the last test of the
    class has ended (or, when only some of them run, at interpreter exit). Tests that
    share it assert only on what they create.
    """

    def __init__(self, size: int = 3) -> None:
        self._size = size
        self._factory: NodeFactory | None = None
        self._cluster: Cluster | None = None
        self._pending: set[str] | None = None

    async def join(self, testcase: TestCase) -> Cluster:
        if self._pending is None:
            self._pending = set(pyunit.TestLoader().getTestCaseNames(type(testcase)))
        testcase.addCleanup(self._leave, testcase._testMethodName)
        if self._cluster is None:
            workdir = Path(testcase.mktemp()).resolve()
            workdir.mkdir(parents=True)
            self._factory = NodeFactory(workdir)
            atexit.register(self._factory.kill_all)
            self._cluster = Cluster(self._factory, self._size)
        for node in self._cluster.nodes.values():
            node.attach(testcase)
        await self._cluster.find_leader()
        return self._cluster

    def _leave(self, test_name: str) -> None:
        self._pending.discard(test_name)
        if not self._pending and self._factory is not None:
            self._factory.kill_all()
            self._factory = self._cluster = self._pending = None
