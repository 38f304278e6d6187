"""Durable nodes (--data-dir): SIGKILL at any moment loses nothing acknowledged."""

import contextlib
import errno
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import docker
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.net.channels import Wire
from jobsched.net.outbound import CallFailed, call_deferred
from jobsched.raft.sqlite_storage import DATA_FILE_NAME
from tests import docker_engine
from tests.integration.jobwait import wait_finished, wait_status
from tests.integration.test_cluster import job_table
from tests.nodeproc import (
    REPO_ROOT,
    TWISTD,
    Cluster,
    DeadNode,
    NodeFactory,
    free_port,
    metric_samples,
    pause,
    wait_for,
)
from tests.processes import keeper_pids


def sqlite3_rows(path: Path, query: str) -> list:
    """The rows of `query` on the SQLite file at `path` (read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return conn.execute(query).fetchall()


class SteadyClient:
    """Submits jobs one after another (each with its own idempotency key, retried
    across leaders until acknowledged) and records every acknowledged job."""

    def __init__(self, cluster: Cluster, duration: float) -> None:
        self._cluster = cluster
        self._stop_at = time.monotonic() + duration
        self._channels = {}
        self.acked = {}  # idempotency key -> job id
        self.errors = []

    async def run(self) -> None:
        n = 0
        try:
            while time.monotonic() < self._stop_at:
                key = f"crash-{n}"
                job_id = await self._submit(key)
                if job_id:
                    self.acked[key] = job_id
                    n += 1
        finally:
            for channel in self._channels.values():
                channel.close()

    async def _submit(self, key: str) -> str | None:
        request = pb.SubmitJobRequest(command=f"echo {key}", idempotency_key=key)
        address = None
        while time.monotonic() < self._stop_at + 30:
            address = address or random.choice(list(self._cluster.nodes.values())).grpc_address
            if address not in self._channels:
                self._channels[address] = Wire().open_channel(address)
            stub = pb_grpc.SchedulerServiceStub(self._channels[address])
            try:
                return (await call_deferred(reactor, stub.SubmitJob, request, 6)).job_id
            except CallFailed as error:
                address = error.details.partition("Try ")[2] or None
                await pause(0.05)
        self.errors.append(key)
        return None


def run_twistd(workdir: Path, *options: str) -> defer.Deferred:
    """Run `twistd -n jobsched` with `options` to completion (in a thread) on this
    checkout's code; a Deferred of the CompletedProcess."""
    return deferToThread(
        subprocess.run,
        [TWISTD, "-n", "--pidfile=", "jobsched", *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )


class DurabilityTests(unittest.TestCase):
    timeout = 300

    def setUp(self) -> None:
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir(parents=True)
        self.nodes = NodeFactory.for_test(self)

    async def test_sigkill_at_any_moment_loses_no_acknowledged_job(self):
        cluster = Cluster(self.nodes, 3, "--data-dir", str(self.workdir / "data{node_id}"))
        await cluster.find_leader()
        terms = {node_id: 0 for node_id in cluster.nodes}
        term_drops = []

        async def record_terms():
            for node_id, view in (await cluster.views()).items():
                if view["current_term"] < terms[node_id]:
                    term_drops.append((node_id, terms[node_id], view["current_term"]))
                terms[node_id] = max(terms[node_id], view["current_term"])

        client = SteadyClient(cluster, duration=30)
        submitting = defer.ensureDeferred(client.run())
        rng = random.Random(1234)
        kills = 0
        while not submitting.called and kills < 14:
            await pause(rng.uniform(1.0, 2.5))
            await record_terms()
            try:
                victim = await cluster.find_leader(timeout=5) if kills % 3 == 0 else None
            except DeadNode:
                raise
            except AssertionError:
                victim = None
            victim = victim or cluster.nodes[rng.choice(list(cluster.nodes))]
            victim.kill()
            victim.start()
            kills += 1
        await submitting
        self.assertGreaterEqual(kills, 10)
        self.assertEqual(client.errors, [], "submits never acknowledged")
        self.assertGreater(len(client.acked), 50)

        for node in cluster.nodes.values():  # all three at once
            node.kill()
        for node in cluster.nodes.values():
            node.start()
        await cluster.find_leader()

        async def settled():
            await record_terms()
            views = await cluster.views()
            marks = {(v["commit_index"], v["last_applied"]) for v in views.values()}
            tables = [await job_table(node) for node in cluster.nodes.values()]
            return len(views) == 3 and len(marks) == 1 and all(t == tables[0] for t in tables)

        await wait_for(
            settled, 120, "the restarted cluster to settle with identical tables", interval=0.5
        )
        self.assertEqual(term_drops, [], "(node, term seen, lower term seen later)")
        for node in cluster.nodes.values():
            metrics_text = (await node.rest("GET", "/metrics")).body
            metrics = metric_samples(metrics_text)
            # durable writes happened
            self.assertGreater(metrics["jobsched_storage_commits_total"], 0)
            self.assertGreater(metrics["jobsched_storage_entries_written_total"], 0)
            table = await job_table(node)
            commands = [command for command, _status, _output in table.values()]
            for key, job_id in client.acked.items():
                self.assertIn(job_id, table, f"acknowledged job {key} lost on {node.node_id}")
                self.assertEqual(commands.count(f"echo {key}"), 1, f"{key} more than once")

    async def test_a_restart_after_compactions_rebuilds_the_table_from_kept_entries(self):
        """The file takes a compaction's snapshot only every 8,000 entries: a node
        killed after more than 1,000 (its log compacted in memory) rebuilds the same
        table from the entries the file kept."""
        data = self.workdir / "data"
        node = self.nodes.start("--executor", "process", "--data-dir", str(data))
        await node.until_ready()

        async def submit(lane: int) -> None:
            for n in range(150):
                answer = await node.rest("POST", "/api/jobs", {"command": f"echo {lane}-{n}"})
                self.assertEqual(answer.status, 200, answer.body)

        await defer.gatherResults([defer.ensureDeferred(submit(lane)) for lane in range(8)])

        async def all_finished():
            table = await job_table(node)
            return all(status == "completed" for _, status, _ in table.values()) and table

        before = await wait_for(all_finished, 120, "1,200 jobs to complete")
        view = (await node.rest("GET", "/api/cluster")).body
        self.assertGreater(view["first_log_index"], 1, "the log was compacted")
        node.kill()
        snapshots = sqlite3_rows(data / DATA_FILE_NAME, "SELECT idx FROM snapshot")
        self.assertEqual(snapshots, [], "the file kept entries, not the snapshot")
        node.start()
        await node.until_ready()
        self.assertEqual(len(before), 1200)

        async def rebuilt():
            return await job_table(node) == before

        await wait_for(rebuilt, 60, "the same 1,200 jobs after the restart")

    async def refused_start(self, data: Path, *options: str) -> list[str]:
        """Start a node on `data` that must fail to start; the lines of its stderr."""
        result = await run_twistd(
            self.workdir,
            *options,
            "--executor",
            "process",
            "--port",
            str(free_port()),
            "--dashboard-port",
            "0",
            "--data-dir",
            str(data),
        )
        self.assertNotEqual(result.returncode, 0, result.stderr)
        return [line for line in result.stderr.splitlines() if line.strip()]

    async def test_a_damaged_data_file_stops_the_node_with_one_line(self):
        data = self.workdir / "data"
        data.mkdir()
        (data / "raft.sqlite3").write_bytes(b"this is not a database" * 100)
        lines = await self.refused_start(data)
        self.assertEqual(
            lines,
            [
                f"jobsched: error: {data / 'raft.sqlite3'}: not a jobsched data file "
                "(file is not a database)"
            ],
            lines,
        )

    async def test_a_data_dir_of_another_node_is_refused(self):
        data = self.workdir / "shared-data"
        node = self.nodes.start("--executor", "process", "--data-dir", str(data), node_id=1)
        await node.until_ready()
        await node.stop()
        lines = await self.refused_start(data, "--node-id", "2")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("belongs to node 1, not node 2", lines[0])

    async def test_a_second_node_on_a_data_dir_in_use_is_refused(self):
        data = self.workdir / "data-in-use"
        node = self.nodes.start("--executor", "process", "--data-dir", str(data), node_id=1)
        await node.until_ready()
        data_file = data / "raft.sqlite3"
        self.assertEqual(
            await self.refused_start(data),
            [
                f"jobsched: error: {data_file}: in use by another process"
                f" (it holds {data_file}.lock for more than 10s)"
            ],
        )
        self.assertEqual((await node.rest("GET", "/health/ready")).status, 200)


class DockerRestartTests(unittest.TestCase):
    """A durable node with the docker executor, killed while a container runs."""

    timeout = 300

    async def setUp(self) -> None:
        self.engine = await deferToThread(docker_engine.prepared_env)
        self.docker = docker.from_env()
        self.addCleanup(self.docker.close)
        self.workdir = Path(self.mktemp()).resolve()
        self.workdir.mkdir(parents=True)
        self.nodes = NodeFactory.for_test(self)

    def containers_named(self, name: str) -> defer.Deferred:
        return deferToThread(docker_engine.containers_named, self.docker, name)

    async def test_a_restarted_node_removes_its_leftover_container_and_fails_the_job(self):
        node = self.nodes.start(
            "--executor",
            "docker",
            "--image",
            self.engine.image,
            "--data-dir",
            str(self.workdir / "data"),
        )
        await node.until_ready()
        job_id = (await node.call("SubmitJob", pb.SubmitJobRequest(command="sleep 60"))).job_id
        await wait_status(node, job_id, pb.JOB_STATUS_RUNNING)
        name = "jobsched-" + job_id.replace("-", "")

        async def container_running():
            return [c for c in await self.containers_named(name) if c.status == "running"]

        await wait_for(container_running, 60, "the job's container to run")
        # The whole host crashes: the node, held first so that it cannot react, and its
        # fence keeper, which would otherwise kill and remove the container at once.
        os.kill(node.process.pid, signal.SIGSTOP)
        for keeper in keeper_pids(node.process.pid):
            os.kill(keeper, signal.SIGKILL)
        node.kill()
        self.assertTrue(await container_running())  # orphaned, still running
        node.start()
        await node.until_ready()
        status = await wait_finished(node, job_id)
        self.assertEqual(status.status, pb.JOB_STATUS_FAILED)
        self.assertEqual(status.error, "node restarted")

        async def container_gone():
            return not await self.containers_named(name)

        await wait_for(container_gone, 30, "the leftover container to be removed")
        again = await node.call("SubmitJob", pb.SubmitJobRequest(command="echo back"))
        self.assertEqual((await wait_finished(node, again.job_id)).output, "back\n")


TMPFS_BYTES = 2 * 1024 * 1024


def fill(path: Path) -> None:
    """Write zeros to `path` until its file system is full."""
    with open(path, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(bytes(4096))
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise


class FullDiskTests(unittest.TestCase):
    """A node whose --data-dir fills up exits at once with one line naming the file and
    the OS error; restarted once space is freed, it has every acknowledged job."""

    timeout = 180

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a small tmpfs needs root (CI runs as root)")
        self.disk = Path(self.mktemp()).resolve() / "disk"
        self.disk.mkdir(parents=True)
        mount = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(self.disk)]
        subprocess.run(mount, check=True, capture_output=True)
        self.addCleanup(subprocess.run, ["umount", str(self.disk)], check=True)
        self.nodes = NodeFactory.for_test(self)  # its nodes are killed before the umount

    async def submit(self, node, n: int) -> str | None:
        """SubmitJob `echo <n>`; its id once acknowledged, None if refused or unanswered."""
        request = pb.SubmitJobRequest(command=f"echo full-disk-{n}")
        try:
            return (await node.call("SubmitJob", request, 10)).job_id
        except CallFailed:
            return None

    async def test_a_full_data_dir_ends_the_node_and_a_restart_keeps_every_acked_job(self):
        data_file = self.disk / "data" / "raft.sqlite3"
        node = self.nodes.start(
            "--executor", "process", "--data-dir", str(data_file.parent), separate_stderr=True
        )
        await node.until_ready()
        acked = [await self.submit(node, n) for n in range(20)]
        self.assertNotIn(None, acked)
        await deferToThread(fill, self.disk / "filler")

        node.stopped_on_purpose = True  # the node is expected to end by itself now
        n = len(acked)
        deadline = time.monotonic() + 30
        while node.is_running() and time.monotonic() < deadline:
            job_id = await self.submit(node, n)
            if job_id is not None:
                acked.append(job_id)
            n += 1
        await wait_for(lambda: not node.is_running(), 30, "the node to exit")

        self.assertEqual(node.process.returncode, 1)
        stderr = [line for line in node.stderr_path.read_text().splitlines() if line.strip()]
        self.assertEqual(len(stderr), 1, stderr)
        self.assertTrue(stderr[0].startswith(f"jobsched: error: {data_file}: write failed: "))
        self.assertIn("No space left on device", stderr[0])
        reason = stderr[0].removeprefix("jobsched: error: ")
        self.assertIn(f"Raft storage failed, this node stops: {reason}", node.log_text())

        (self.disk / "filler").unlink()
        node.kill()  # already gone: this reaps it and drops the channel to the dead process
        node.start()
        await node.until_ready()
        for job_id in acked:
            status = await node.call("GetJobStatus", pb.GetJobStatusRequest(job_id=job_id))
            self.assertEqual(status.job_id, job_id)
