"""`make run` as the README gives it: a development node with the process executor."""

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.e2e.clirun import run_cli
from tests.nodeproc import REPO_ROOT, Node, wait_for

MAKE_RUN_GRPC_PORT = 50051
MAKE_RUN_HTTP_PORT = 8081


def kill_process_group(process: subprocess.Popen) -> None:
    """SIGKILL make and the node it started (they share make's session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def readme_cli_lines() -> list[list[str]]:
    """The commands of the README's "Getting started" block, as argument lists after
    `.venv/bin/jobsched` (comments dropped)."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("## Getting started", 1)[1].split("```", 2)[1]
    prefix = ".venv/bin/jobsched "
    commands = []
    for line in block.splitlines():
        command = line.split("  #", 1)[0].strip()
        if command.startswith(prefix):
            commands.append(shlex.split(command[len(prefix) :]))
    return commands


class MakeRunTests(unittest.TestCase):
    timeout = 300

    async def test_make_run_starts_a_process_executor_node_that_runs_a_curl_job(self):
        workdir = Path(self.mktemp()).resolve()
        workdir.mkdir(parents=True)
        log_path = workdir / "make-run.log"
        # make uses the virtualenv these tests run in (the repository's .venv under
        # `make test`) rather than building one, and the node runs this checkout's code
        env = dict(os.environ, VENV=sys.prefix, PYTHONPATH=str(REPO_ROOT))
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["make", "run"],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self.addCleanup(kill_process_group, process)
        # the node make started, seen through the usual client; if make exits, the
        # waits below fail at once with its log
        node = Node(
            1, MAKE_RUN_GRPC_PORT, MAKE_RUN_HTTP_PORT, log_path, ["make", "run"], process
        ).attach(self)
        await node.until_ready(timeout=120)

        submitted = await deferToThread(
            subprocess.run,
            [
                "curl",
                "-s",
                "-X",
                "POST",
                f"{node.url}/api/jobs",
                "-d",
                '{"command": "echo hello from make run"}',
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        self.assertIn('"success": true', submitted.stdout)
        job_id = submitted.stdout.split('"job_id": "')[1].split('"')[0]

        async def finished():
            job = (await node.rest("GET", f"/api/jobs/{job_id}")).body
            return job if job["status"] == "completed" else None

        job = await wait_for(finished, 60, "the curl job to complete")
        self.assertEqual(job["output"], "hello from make run\n")
        await self.check_readme_quick_start()

        log_text = log_path.read_text()
        self.assertIn("Executor `process`", log_text)
        self.assertIn("NO isolation", log_text)

    async def check_readme_quick_start(self) -> None:
        """Every CLI line of the README's quick start, in order, with the CLI's default
        address; `<id>` is the id the first submit printed."""
        lines = readme_cli_lines()
        self.assertGreaterEqual(len(lines), 6)
        job_id = None
        for args in lines:
            if job_id is not None:
                args = [job_id if arg == "<id>" else arg for arg in args]
            result = await run_cli(*args)
            self.assertEqual(result.returncode, 0, (args, result))
            if job_id is None:
                self.assertIn("Job submitted successfully!", result.stdout)
                job_id = result.stdout.split("Job ID: ")[1].split()[0]
            if args[:2] == ["job", "wait"]:
                self.assertEqual(result.stdout, "hello\n")
            if args[:3] == ["job", "submit", "--wait"]:
                self.assertEqual(result.stdout, "1\n2\n3\n")
            if args[:2] == ["job", "status"]:
                self.assertIn("COMPLETED", result.stdout)
