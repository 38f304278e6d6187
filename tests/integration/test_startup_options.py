"""A node started with a bad option stops at once with one line naming the option.

Runs the real `twistd -n jobsched` and `jobsched server` as subprocesses (each to
completion, in a thread, so the reactor stays free); validation fails before any part
of the node is built, so no port is bound and nothing needs cleaning up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched.tokens import Role
from tests.nodeproc import REPO_ROOT, TWISTD, NodeFactory, free_port, wait_for
from tests.pki import Pki, new_tokens, write_token_file

DEADLINE_SECONDS = 60

BAD_OPTIONS = {
    "port_not_a_number": (
        ["--port", "abc"],
        "--port: must be an integer from 1 to 65535 (got 'abc')",
    ),
    "peer_without_a_port": (
        ["--peers", "2:nohost"],
        "--peers: entry '2:nohost': expected host:port (got 'nohost')",
    ),
    "unknown_executor": (
        ["--executor", "foo"],
        "--executor: must be one of docker, process (got 'foo')",
    ),
    "heartbeat_interval_too_long": (
        ["--heartbeat-interval", "500"],
        "--heartbeat-interval: must be less than",
    ),
    "unknown_option": (["--no-such-option"], "option --no-such-option not recognized"),
}
SERVER_BAD_OPTIONS = ("port_not_a_number", "peer_without_a_port")


class StartupOptionTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir(parents=True)

    def start(self, command: list[str], **env: str) -> defer.Deferred:
        """Run a node command to completion in an empty directory, with this checkout's
        jobsched importable; a Deferred of the CompletedProcess."""
        environ = dict(os.environ, **env)
        environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")])
        )
        return deferToThread(
            subprocess.run,
            command,
            cwd=self.workdir,
            env=environ,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DEADLINE_SECONDS,
        )

    def assertOneLineError(self, result: subprocess.CompletedProcess, expected: str) -> None:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(result.returncode, 2, result)
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("jobsched: error: " + expected), result.stderr)
        self.assertNotIn("Traceback", result.stderr + result.stdout)
        self.assertEqual(result.stdout, "")

    async def check_twistd_refuses(self, case) -> None:
        """`twistd -n jobsched` stops with one line naming the bad option"""
        options, expected = case
        result = await self.start([TWISTD, "-n", "jobsched", *options])
        self.assertOneLineError(result, expected)
        self.assertFalse((self.workdir / "twistd.pid").exists())

    async def check_server_refuses(self, case) -> None:
        """`jobsched server` stops with one line naming the bad option"""
        options, expected = case
        result = await self.start([sys.executable, "-m", "jobsched.cli.main", "server", *options])
        self.assertOneLineError(result, expected)

    async def test_jobsched_server_help_lists_the_node_options(self):
        result = await self.start([sys.executable, "-m", "jobsched.cli.main", "server", "--help"])
        self.assertEqual(result.returncode, 0, result)
        for option in ("--node-id=", "--peers=", "--dashboard-port=", "--tls", "--worker-expiry="):
            self.assertIn(option, result.stdout)

    async def test_jobsched_unknown_command_is_a_usage_error(self):
        result = await self.start([sys.executable, "-m", "jobsched.cli.main", "frobnicate"])
        self.assertEqual(result.returncode, 2)
        self.assertIn("invalid choice: 'frobnicate'", result.stderr)

    async def test_docker_executor_without_an_engine_stops_with_one_line(self):
        result = await self.start(
            [
                TWISTD,
                "-n",
                "--pidfile=",
                "jobsched",
                "--executor",
                "docker",
                "--port",
                str(free_port()),
                "--dashboard-port",
                "0",
            ],
            DOCKER_HOST=f"unix://{self.workdir}/no-such.sock",
        )
        self.assertNotEqual(result.returncode, 0)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(
            lines[0].startswith(
                "jobsched: error: --executor docker: cannot reach the Docker engine"
            ),
            result.stderr,
        )

    async def test_a_grpc_port_in_use_stops_the_node_with_one_line(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = await self.start(
                [
                    TWISTD,
                    "-n",
                    "--pidfile=",
                    "jobsched",
                    "--executor",
                    "process",
                    "--port",
                    str(port),
                    "--dashboard-port",
                    "0",
                ]
            )
        self.assertEqual(result.returncode, 1, result)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(  # after grpc's own log line of the failed bind
            lines[-1],
            f"jobsched: error: cannot bind gRPC port 127.0.0.1:{port} "
            "(in use, or not an address of this host)",
            result.stderr,
        )
        self.assertNotIn("Traceback", result.stderr + result.stdout)

    async def test_security_options_that_cannot_work_stop_the_node_with_one_line(self):
        pki = Pki(self.workdir / "pki").nodes(1, 2)
        tls = [arg.replace("{node_id}", "1") for arg in pki.node_args()]
        tokens = new_tokens()
        good = write_token_file(self.workdir / "tokens", tokens)
        bad = self.workdir / "bad-tokens"
        bad.write_text(f"# tokens\nadmin {tokens[Role.ADMIN]}\nroot {tokens[Role.READ]}\n")
        cases = [
            (["--auth-token-file", str(good)], "--auth-token-file: needs --tls"),
            ([*tls, "--auth-token-file", str(bad)], "--auth-token-file: line 3: the role must be"),
            ([*tls, "--auth-token-file", str(self.workdir / "none")], "--auth-token-file: cannot"),
            ([*tls, "--node-id", "2"], "--cert: is node 1's certificate, not node 2's"),
            (["--tls"], "--ca-cert: required with --tls"),
        ]
        for options, expected in cases:
            result = await self.start([TWISTD, "-n", "jobsched", *options])
            self.assertOneLineError(result, expected)
            for token in tokens.values():
                self.assertNotIn(token, result.stderr)

    async def test_json_log_format_writes_one_json_object_per_line(self):
        node = NodeFactory.for_test(self).start("--executor", "process", "--log-format", "json")
        await node.until_ready()
        node.kill()
        lines = [line for line in node.log_text().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]
        self.assertTrue(any("starting: gRPC" in record.get("log_format", "") for record in records))
        self.assertTrue(all(record["log_level"]["name"] != "debug" for record in records))


class NodeOptionEffectTests(unittest.TestCase):
    """Options no other test exercises end to end take effect (no option that does
    nothing): --advertise-addr, --job-timeout, --max-output-bytes, --worker-slots."""

    timeout = 120

    async def test_each_option_changes_what_the_node_does(self):
        advertised = f"127.0.0.1:{free_port()}"
        node = NodeFactory.for_test(self).start(
            "--executor",
            "process",
            "--advertise-addr",
            advertised,
            "--job-timeout",
            "1",
            "--max-output-bytes",
            "8",
            "--worker-slots",
            "1",
        )
        await node.until_ready()
        view = (await node.rest("GET", "/api/cluster")).body
        self.assertEqual(view["nodes"][0]["address"], advertised)

        async def submit(command: str, **fields) -> str:
            answer = await node.rest("POST", "/api/jobs", {"command": command, **fields})
            return answer.body["job_id"]

        async def job(job_id: str) -> dict:
            return (await node.rest("GET", f"/api/jobs/{job_id}")).body

        async def finished(job_id: str) -> dict:
            body = await job(job_id)
            return body if body["status"] in ("completed", "failed") else None

        async def running(job_id: str) -> bool:
            return (await job(job_id))["status"] == "running"

        sleeper = await submit("sleep 3", timeout_seconds=30)
        queued = await submit("echo 0123456789")
        await wait_for(lambda: running(sleeper), 30, "the sleeper to take the only slot")
        self.assertEqual((await job(queued))["status"], "pending")
        echoed = await wait_for(lambda: finished(queued), 60, "the echo to finish")
        self.assertEqual((echoed["output"], echoed["output_truncated"]), ("01234567", True))
        slow = await submit("sleep 10")  # the default timeout applies: 1 s
        timed_out = await wait_for(lambda: finished(slow), 60, "the timeout")
        self.assertEqual(timed_out["status"], "failed")
        self.assertEqual(timed_out["attempt_history"][0]["outcome"], "timed_out")


def add_cases(prefix: str, names, check) -> None:
    """One StartupOptionTests method `<prefix>_<case name>` per bad option."""
    for name in names:

        async def test(self, case=BAD_OPTIONS[name]):
            await check(self, case)

        test.__name__ = f"{prefix}_{name}"
        test.__doc__ = f"{check.__doc__} ({name.replace('_', ' ')})"
        setattr(StartupOptionTests, test.__name__, test)


add_cases("test_twistd_refuses", BAD_OPTIONS, StartupOptionTests.check_twistd_refuses)
add_cases(
    "test_jobsched_server_refuses", SERVER_BAD_OPTIONS, StartupOptionTests.check_server_refuses
)
