"""Fencing on real nodes: the jobs of a SIGKILLed node die with it (both executors), and
a paused node's job never runs at the same time as the attempt that replaced it."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from pathlib import Path

import docker
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from tests import docker_engine
from tests.integration.jobwait import wait_finished, wait_status
from tests.nodeproc import Cluster, Node, NodeFactory, wait_for
from tests.processes import KEEPER_MODULE, keeper_pids, pids_with

KILL_DEADLINE_SECONDS = 5.0  # BEHAVIOUR: within 1 s; generous here, the cores are shared
EXPIRY = 2  # --worker-expiry of the pause test, to keep it short
LOST_WORKER_LINE = " lost job "  # the leader's "Worker N lost job ...: taking it back"


def report(figure: str) -> None:
    """A measured figure, on the test run's output."""
    sys.stderr.write(f"\n[fencing] {figure}\n")


async def submit(node: Node, command: str, **fields) -> str:
    answer = await node.rest("POST", "/api/jobs", {"command": command, **fields})
    if answer.status != 200:
        raise AssertionError(f"submit failed: {answer.status} {answer.body}")
    return answer.body["job_id"]


class KilledNodeTests(unittest.TestCase):
    """A node SIGKILLed while a job runs: its keeper kills the job at once; the
    restarted node reports the attempt failed, `node restarted`."""

    timeout = 120

    async def kill_and_time(self, node: Node, gone) -> float:
        """SIGKILL `node`; seconds until `gone()` holds."""
        keepers = keeper_pids(node.process.pid)
        self.assertEqual(len(keepers), 1, "one fence keeper per node")
        started = time.monotonic()
        node.kill()
        try:
            await wait_for(gone, 30, "the killed node's job to be gone")
        except AssertionError as error:
            raise AssertionError(f"{error}; the node's log:\n{node.log_tail()}") from None
        elapsed = time.monotonic() - started
        await wait_for(lambda: keepers[0] not in pids_with(KEEPER_MODULE), 10, "the keeper to exit")
        return elapsed

    async def restart_reports_the_attempt(self, node: Node, job_id: str) -> None:
        node.start()
        await node.until_ready()
        status = await wait_finished(node, job_id)
        self.assertEqual((status.status, status.error), (pb.JOB_STATUS_FAILED, "node restarted"))

    async def test_process_executor_jobs_die_with_their_node(self):
        data_dir = Path(self.mktemp()).resolve()
        node = NodeFactory.for_test(self).start(
            "--executor", "process", "--data-dir", str(data_dir)
        )
        await node.until_ready()
        marker = f"sleep 60.{uuid.uuid4().int % 10**9}"
        job_id = await submit(node, marker)
        await wait_status(node, job_id, pb.JOB_STATUS_RUNNING)
        await wait_for(lambda: pids_with(marker), 30, "the job's process to run")

        elapsed = await self.kill_and_time(node, lambda: not pids_with(marker))
        report(f"process executor: job gone {elapsed:.3f}s after SIGKILL of its node")
        self.assertLessEqual(elapsed, KILL_DEADLINE_SECONDS)
        await self.restart_reports_the_attempt(node, job_id)

    async def test_docker_executor_containers_die_with_their_node(self):
        engine = await deferToThread(docker_engine.prepared_env)
        data_dir = Path(self.mktemp()).resolve()
        node = NodeFactory.for_test(self).start(
            "--executor", "docker", "--image", engine.image, "--data-dir", str(data_dir)
        )
        await node.until_ready()
        job_id = await submit(node, "sleep 60")
        await wait_status(node, job_id, pb.JOB_STATUS_RUNNING)
        client = docker.from_env()
        self.addCleanup(client.close)
        name = "jobsched-" + job_id.replace("-", "")

        def running():
            found = docker_engine.containers_named(client, name)
            return bool(found) and found[0].status == "running"

        await wait_for(lambda: deferToThread(running), 60, "the job's container to run")

        async def container_gone():
            return not await deferToThread(docker_engine.containers_named, client, name)

        elapsed = await self.kill_and_time(node, container_gone)
        report(f"docker executor: container gone {elapsed:.3f}s after SIGKILL of its node")
        self.assertLessEqual(elapsed, KILL_DEADLINE_SECONDS)
        await self.restart_reports_the_attempt(node, job_id)


def tick_command(path: Path, uid: str) -> str:
    """Append `<uid> <shell pid> <nanoseconds>` to `path` every 100 ms, for ~20 s."""
    return (
        f'i=0; while [ $i -lt 200 ]; do echo "{uid} $$ $(date +%s%N)" >> {path}; '
        f"i=$((i+1)); sleep 0.1; done"
    )


def ticks_by_run(path: Path, uid: str) -> dict[str, list[int]]:
    """{shell pid: [tick times in ns]} of the job's runs, in order of appearance."""
    runs: dict[str, list[int]] = {}
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == uid:
            runs.setdefault(words[1], []).append(int(words[2]))
    return runs


class PausedNodeTests(unittest.TestCase):
    """SIGSTOP the leader while it runs a job, past the worker expiry: its keeper kills
    the job before another node starts the next attempt, and after SIGCONT the old
    leader blames no worker for its own silence (the other two run a job each)."""

    timeout = 120

    async def test_a_paused_leaders_job_never_overlaps_its_next_attempt(self):
        factory = NodeFactory.for_test(self)
        cluster = Cluster(factory, 3, "--worker-expiry", str(EXPIRY))
        leader = await cluster.find_leader()
        fillers = [await submit(leader, "sleep 60", timeout_seconds=120) for _ in range(2)]
        busy = {(await wait_status(leader, f, pb.JOB_STATUS_RUNNING)).executed_by for f in fillers}
        uid = uuid.uuid4().hex
        ticks = Path(self.mktemp()).resolve()
        job_id = await submit(leader, tick_command(ticks, uid), timeout_seconds=120)
        running = await wait_status(leader, job_id, pb.JOB_STATUS_RUNNING)
        runner = cluster.nodes[running.executed_by]
        self.assertEqual(busy, set(cluster.nodes) - {runner.node_id})  # fewest jobs first
        if runner is not leader:
            answer = await leader.rest(
                "POST", "/api/cluster/transfer-leader", {"target_node_id": runner.node_id}
            )
            self.assertEqual(answer.status, 200, answer.body)
            await cluster.find_leader(among=[runner.node_id])
        await wait_for(lambda: ticks_by_run(ticks, uid), 30, "the first run to tick")

        pid = runner.process.pid
        self.addCleanup(_continue, pid)
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        first = next(iter(ticks_by_run(ticks, uid)))

        def second_run_ticking():
            others = [run for run in ticks_by_run(ticks, uid) if run != first]
            return others and len(ticks_by_run(ticks, uid)[others[0]]) >= 10

        await wait_for(second_run_ticking, 60, "another node to run the job again")
        paused_for = time.monotonic() - stopped_at
        log_before_continue = len(runner.log_text())
        os.kill(pid, signal.SIGCONT)

        def excused_its_pause():
            return "did not run for" in runner.log_text()[log_before_continue:]

        await wait_for(excused_its_pause, 30, "the old leader to look at its workers again")

        async def old_leader_follows():
            view = await cluster.view(runner.node_id)
            return view["role"] != "leader"

        # It steps down at the first message carrying the newer term (a round trip).
        await wait_for(old_leader_follows, 10, "the old leader to step down")

        runs = ticks_by_run(ticks, uid)
        self.assertEqual(len(runs), 2, runs.keys())
        first_ticks, second_ticks = runs.values()
        gap = (min(second_ticks) - max(first_ticks)) / 1e9
        report(
            f"pause {paused_for:.1f}s (expiry {EXPIRY}s): the first run's last tick came "
            f"{gap:.2f}s before the second run's first"
        )
        self.assertGreater(gap, 0, "the two attempts ran at the same time")
        after_continue = runner.log_text()[log_before_continue:]
        self.assertNotIn(LOST_WORKER_LINE, after_continue)
        self.assertIn("the node's lease ran out", runner.log_text())


def _continue(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
