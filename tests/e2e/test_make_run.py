"""`make run` as the README gives it: a development node with the process executor."""

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.nodeproc import REPO_ROOT, http, wait_until

pytestmark = pytest.mark.slow


def test_make_run_starts_a_process_executor_node_that_runs_a_curl_job(tmp_path):
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["make", "run"],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:

        def ready():
            assert process.poll() is None, Path(log_path).read_text()
            return http("GET", "http://127.0.0.1:8081/health/ready", timeout=2).status == 200

        wait_until(ready, 120, "make run's node on port 8081")
        submitted = subprocess.run(
            [
                "curl",
                "-s",
                "-X",
                "POST",
                "http://127.0.0.1:8081/api/jobs",
                "-d",
                '{"command": "echo hello from make run"}',
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert '"success": true' in submitted.stdout
        job_id = submitted.stdout.split('"job_id": "')[1].split('"')[0]

        def finished():
            job = http("GET", f"http://127.0.0.1:8081/api/jobs/{job_id}").body
            return job if job["status"] == "completed" else None

        job = wait_until(finished, 30, "the curl job to complete")
        assert job["output"] == "hello from make run\n"
        log_text = Path(log_path).read_text()
        assert "Executor `process`" in log_text and "NO isolation" in log_text
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
