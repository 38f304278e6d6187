"""Durable nodes (--data-dir): SIGKILL at any moment loses nothing acknowledged."""

import random
import signal
import subprocess
import threading
import time

import docker
import grpc
import pytest

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from tests.integration.jobwait import wait_finished, wait_status
from tests.integration.test_cluster import job_table
from tests.nodeproc import TWISTD, Cluster, free_port, wait_until

pytestmark = pytest.mark.slow


class SteadyClient(threading.Thread):
    """Submits jobs one after another (each with its own idempotency key, retried
    across leaders until acknowledged) and records every acknowledged job."""

    def __init__(self, cluster, duration: float) -> None:
        super().__init__(daemon=True)
        self._cluster = cluster
        self._stop_at = time.monotonic() + duration
        self.acked = {}  # idempotency key -> job id
        self.errors = []

    def run(self) -> None:
        channels = {}
        n = 0
        try:
            while time.monotonic() < self._stop_at:
                key = f"crash-{n}"
                job_id = self._submit(key, channels)
                if job_id:
                    self.acked[key] = job_id
                    n += 1
        finally:
            for channel in channels.values():
                channel.close()

    def _submit(self, key, channels):
        request = pb.SubmitJobRequest(command=f"echo {key}", idempotency_key=key)
        address = None
        while time.monotonic() < self._stop_at + 30:
            address = address or random.choice(list(self._cluster.nodes.values())).grpc_address
            if address not in channels:
                channels[address] = grpc.insecure_channel(address)
            try:
                return (
                    pb_grpc.SchedulerServiceStub(channels[address])
                    .SubmitJob(request, timeout=6)
                    .job_id
                )
            except grpc.RpcError as error:
                hint = (error.details() or "").partition("Try ")[2]
                address = hint or None
                time.sleep(0.05)
        self.errors.append(key)
        return None


def test_sigkill_at_any_moment_loses_no_acknowledged_job(nodes, tmp_path):
    cluster = Cluster(nodes, 3, "--data-dir", str(tmp_path / "data{node_id}"))
    cluster.leader(timeout=30)
    terms = {node_id: 0 for node_id in cluster.nodes}

    def record_terms():
        for node_id, view in cluster.cluster_views().items():
            assert view["current_term"] >= terms[node_id], f"node {node_id}'s term went down"
            terms[node_id] = view["current_term"]

    client = SteadyClient(cluster, duration=30)
    client.start()
    rng = random.Random(1234)
    kills = 0
    while client.is_alive() and kills < 14:
        time.sleep(rng.uniform(1.0, 2.5))
        record_terms()
        try:
            victim = cluster.leader(timeout=5) if kills % 3 == 0 else None
        except AssertionError:
            victim = None
        victim = victim or cluster.nodes[rng.choice(list(cluster.nodes))]
        victim.kill(signal.SIGKILL)
        victim.start()
        kills += 1
    client.join(timeout=90)
    assert kills >= 10
    assert not client.errors, f"submits never acknowledged: {client.errors[:5]}"
    assert len(client.acked) > 50

    for node in cluster.nodes.values():  # all three at once
        node.kill(signal.SIGKILL)
    for node in cluster.nodes.values():
        node.start()
    cluster.leader(timeout=30)

    def settled():
        record_terms()
        views = cluster.cluster_views()
        marks = {(v["commit_index"], v["last_applied"]) for v in views.values()}
        tables = [job_table(node) for node in cluster.nodes.values()]
        return len(views) == 3 and len(marks) == 1 and all(t == tables[0] for t in tables)

    wait_until(settled, 60, "the restarted cluster to settle with identical tables", interval=0.5)
    for node in cluster.nodes.values():
        metrics = dict(line.rsplit(" ", 1) for line in node.get("/metrics").body.splitlines())
        assert int(metrics["jobsched_storage_commits_total"]) > 0  # durable writes happened
        assert int(metrics["jobsched_storage_entries_written_total"]) > 0
        table = job_table(node)
        commands = [command for command, _status, _output in table.values()]
        for key, job_id in client.acked.items():
            assert job_id in table, f"acknowledged job {key} lost on node {node.node_id}"
            assert commands.count(f"echo {key}") == 1, f"{key} present more than once"


def test_a_damaged_data_file_stops_the_node_with_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "raft.sqlite3").write_bytes(b"this is not a database" * 100)
    result = subprocess.run(
        [
            TWISTD,
            "-n",
            "--pidfile=",
            "jobsched",
            "--executor",
            "process",
            "--port",
            str(free_port()),
            "--dashboard-port",
            "0",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"jobsched: error: {data / 'raft.sqlite3'}: not a jobsched data file "
        "(file is not a database)"
    ], result.stderr


def test_a_data_dir_of_another_node_is_refused(nodes, tmp_path):
    data = tmp_path / "shared-data"
    node = nodes.start("--executor", "process", "--data-dir", str(data), node_id=1)
    node.wait_ready()
    node.kill(signal.SIGTERM)
    result = subprocess.run(
        [
            TWISTD,
            "-n",
            "--pidfile=",
            "jobsched",
            "--node-id",
            "2",
            "--executor",
            "process",
            "--port",
            str(free_port()),
            "--dashboard-port",
            "0",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "belongs to node 1, not node 2" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


@pytest.mark.docker
def test_a_restarted_node_removes_its_leftover_container_and_fails_the_job(
    nodes, tmp_path, docker_engine
):
    node = nodes.start(
        "--executor", "docker", "--image", docker_engine.image, "--data-dir", str(tmp_path / "data")
    )
    node.wait_ready()
    job_id = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="sleep 60")).job_id
    wait_status(node, job_id, pb.JOB_STATUS_RUNNING)
    name = "jobsched-" + job_id.replace("-", "")
    client = docker.from_env()
    try:
        wait_until(
            lambda: client.containers.list(filters={"name": name}), 30, "the job's container to run"
        )
        node.kill(signal.SIGKILL)
        assert client.containers.list(filters={"name": name})  # orphaned, still running
        node.start()
        node.wait_ready(timeout=30)
        status = wait_finished(node, job_id, timeout=30)
        assert status.status == pb.JOB_STATUS_FAILED
        assert status.error == "node restarted"
        wait_until(
            lambda: not client.containers.list(all=True, filters={"name": name}),
            10,
            "the leftover container to be removed",
        )
        again = node.scheduler.SubmitJob(pb.SubmitJobRequest(command="echo back"))
        assert wait_finished(node, again.job_id).output == "back\n"
    finally:
        client.close()
