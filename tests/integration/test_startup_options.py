"""A node started with a bad option stops at once with one line naming the option.

Runs the real `twistd -n jobsched` and `jobsched server` as subprocesses; validation fails
before any part of the node is built, so no port is bound and nothing needs cleaning up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.nodeproc import free_port

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE_SECONDS = 30

BAD_OPTIONS = [
    (["--port", "abc"], "--port: must be an integer from 1 to 65535 (got 'abc')"),
    (["--peers", "2:nohost"], "--peers: entry '2:nohost': expected host:port (got 'nohost')"),
    (["--executor", "foo"], "--executor: must be one of docker, process (got 'foo')"),
    (["--heartbeat-interval", "500"], "--heartbeat-interval: must be less than"),
    (["--no-such-option"], "option --no-such-option not recognized"),
]


def start(command: list[str], tmp_path) -> subprocess.CompletedProcess:
    """Run a node command to completion in an empty directory, with jobsched importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return subprocess.run(
        command,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jobsched: error: " + expected), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("options, expected", BAD_OPTIONS)
def test_twistd_refuses_bad_option(options: list[str], expected: str, tmp_path) -> None:
    result = start([TWISTD, "-n", "jobsched", *options], tmp_path)
    assert_one_line_error(result, expected)
    assert not (tmp_path / "twistd.pid").exists()


@pytest.mark.slow
@pytest.mark.parametrize("options, expected", BAD_OPTIONS[:2])
def test_jobsched_server_refuses_bad_option(options: list[str], expected: str, tmp_path) -> None:
    result = start([sys.executable, "-m", "jobsched.cli.main", "server", *options], tmp_path)
    assert_one_line_error(result, expected)


@pytest.mark.slow
def test_jobsched_server_help_lists_the_node_options(tmp_path) -> None:
    result = start([sys.executable, "-m", "jobsched.cli.main", "server", "--help"], tmp_path)
    assert result.returncode == 0, result
    for option in ("--node-id=", "--peers=", "--dashboard-port=", "--tls", "--worker-expiry="):
        assert option in result.stdout


@pytest.mark.slow
def test_jobsched_unknown_command_is_a_usage_error(tmp_path) -> None:
    result = start([sys.executable, "-m", "jobsched.cli.main", "frobnicate"], tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_docker_executor_without_an_engine_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    result = start(
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
        tmp_path,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jobsched: error: --executor docker: cannot reach the Docker engine")


def test_json_log_format_writes_one_json_object_per_line(tmp_path):
    from tests.nodeproc import NodeFactory

    factory = NodeFactory(tmp_path)
    try:
        node = factory.start("--executor", "process", "--log-format", "json")
        node.wait_ready()
    finally:
        factory.kill_all()
    lines = [line for line in node.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any("starting: gRPC" in record.get("log_format", "") for record in records)
    assert all(record["log_level"]["name"] != "debug" for record in records)
