"""Live output on real 3-node clusters: `jobsched job logs -f` through a node that does
not run the job, with the process and the Docker executors; the leader dying meanwhile;
a reader that fell behind the live buffer.

The layout is made deterministic: every node has one slot, node 1 leads (leadership is
moved there), node 2 is drained (the leader gives it no jobs) and a blocker fills node
1's slot, so the job runs on node 3 and is followed through node 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from tests import docker_engine
from tests.e2e.clirun import CLI, cli_environment
from tests.integration.jobwait import wait_status
from tests.nodeproc import Cluster, Node, NodeFactory, wait_for

LINES = 15
FIRST_LINE_SECONDS = 1.0
JOB_EXIT = 7


def ticking_job(tag: str) -> str:
    """Waits 3 s (the follower is connected by then), then prints a line with the time
    it was printed every 200 ms for 3 s, then exits 7. The time is the kernel's uptime
    (10 ms steps), the same clock inside a container and out, where busybox `date` has
    only whole seconds."""
    return (
        f"sleep 3; for i in $(seq 1 {LINES}); do echo {tag} $i $(cut -d' ' -f1 /proc/uptime); "
        f"sleep 0.2; done; exit {JOB_EXIT}"
    )


def uptime() -> float:
    with open("/proc/uptime") as source:
        return float(source.read().split()[0])


def record_figure(name: str, value: float, unit: str) -> None:
    """Append a measured figure to test-figures.jsonl (or $JOBSCHED_FIGURES)."""
    with open(os.environ.get("JOBSCHED_FIGURES") or "test-figures.jsonl", "a") as figures:
        figures.write(json.dumps({"figure": name, "value": round(value, 3), "unit": unit}) + "\n")


class Follower:
    """`jobsched job logs -f ID -o json` as a process; each line it prints, with the
    time it arrived."""

    def __init__(self, node: Node, job_id: str) -> None:
        self.process = subprocess.Popen(
            [*CLI, "-a", f"http://{node.grpc_address}", "job", "logs", "-f", job_id, "-o", "json"],
            env=cli_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[tuple[float, dict]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((uptime(), json.loads(line)))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def chunks(self) -> list[tuple[float, dict]]:
        return [(at, item) for at, item in self.lines if "stream" in item]

    def finish(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def stderr(self) -> str:
        return self.process.stderr.read()


class LiveOutputClusterTestCase(unittest.TestCase):
    timeout = 240
    executor_args: tuple[str, ...] = ()

    async def start_cluster(self) -> Cluster:
        factory = NodeFactory.for_test(self)
        cluster = Cluster(factory, 3, "--worker-slots", "1", *self.executor_args)
        await cluster.until_all_live()
        leader = await cluster.find_leader()
        if leader.node_id != 1:
            reply = await leader.call(
                "TransferLeadership", pb.TransferLeadershipRequest(target_node_id=1)
            )
            self.assertTrue(reply.success, reply.message)
        self.leader = await cluster.find_leader(among=[1])
        drained = await cluster.nodes[2].call("DrainNode", pb.DrainNodeRequest(), 90)
        self.assertTrue(drained.success, drained.message)

        async def leader_knows_node_2_drains():
            status = await self.leader.call("GetClusterStatus", pb.GetClusterStatusRequest())
            return any(node.node_id == 2 and node.draining for node in status.nodes)

        await wait_for(leader_knows_node_2_drains, 30, "the leader to see node 2 draining")
        blocker = await self.submit(f"sleep 600.{uuid.uuid4().int % 10**6:06d}")
        running = await wait_status(self.leader, blocker, pb.JOB_STATUS_RUNNING)
        self.assertEqual(running.assigned_worker, 1)
        return cluster

    async def submit(self, command: str) -> str:
        reply = await self.leader.call("SubmitJob", pb.SubmitJobRequest(command=command))
        return reply.job_id

    async def follow_through_node_2(self, cluster: Cluster, kill_leader: bool) -> None:
        tag = uuid.uuid4().hex[:8]
        job_id = await self.submit(ticking_job(tag))
        follower = Follower(cluster.nodes[2], job_id)
        self.addCleanup(follower.kill)
        running = await wait_status(self.leader, job_id, pb.JOB_STATUS_RUNNING)
        self.assertEqual(running.assigned_worker, 3)

        await wait_for(lambda: follower.chunks(), 60, "the first line through node 2")
        arrived, first = follower.chunks()[0]
        printed = float(first["data"].split()[2])
        latency = arrived - printed
        record_figure(f"live output first line latency ({self.executor_name})", latency, "s")
        self.assertLess(latency, FIRST_LINE_SECONDS, first)
        self.assertEqual(first["data"].split()[:2], [tag, "1"])
        if kill_leader:
            await deferToThread(cluster.nodes[1].kill)

        code = await deferToThread(follower.finish)
        self.assertEqual(code, JOB_EXIT, follower.stderr())
        chunks = [item for _at, item in follower.chunks()]
        stdout = "".join(chunk["data"] for chunk in chunks if chunk["stream"] == "stdout")
        self.assertEqual(
            [line.split()[:2] for line in stdout.splitlines()],
            [[tag, str(i)] for i in range(1, LINES + 1)],
        )
        offsets = [chunk["offset"] for chunk in chunks if chunk["stream"] == "stdout"]
        sizes = [len(chunk["data"].encode()) for chunk in chunks if chunk["stream"] == "stdout"]
        self.assertEqual(offsets, [sum(sizes[:n]) for n in range(len(sizes))])  # no gap
        self.assertEqual(follower.lines[-1][1], {"exit_code": JOB_EXIT, "status": "FAILED"})
        arrivals = [at for at, chunk in follower.chunks()]
        self.assertGreater(arrivals[-1] - arrivals[0], 1.0)  # came as printed, not at the end


class ProcessLiveOutputTests(LiveOutputClusterTestCase):
    executor_name = "process"

    async def test_logs_follow_through_a_node_not_running_the_job_while_the_leader_dies(self):
        cluster = await self.start_cluster()
        await self.follow_through_node_2(cluster, kill_leader=True)

    async def test_a_reader_behind_the_live_buffer_is_told_how_much_it_missed(self):
        factory = NodeFactory.for_test(self)
        node = factory.start("--executor", "process", "--max-output-bytes", "1000")
        await node.until_ready()
        self.leader = node
        job_id = await self.submit("head -c 50000 /dev/zero | tr '\\0' x; echo ready >&2; sleep 60")
        request = pb.StreamJobOutputRequest(job_id=job_id)

        def read_all():
            return list(node.scheduler.StreamJobOutput(request))

        async def everything_written():
            chunks = await deferToThread(read_all)
            return chunks if any(c.stream == "stderr" for c in chunks) else None

        await wait_for(everything_written, 60, "the job to have written its output")
        # A read that began while the job still wrote may have seen its output in two
        # parts; one that begins after "ready" came finds every byte there.
        chunks = await deferToThread(read_all)
        stdout = [chunk for chunk in chunks if chunk.stream == "stdout"]
        self.assertEqual(
            [(c.offset, c.skipped, len(c.data)) for c in stdout], [(49000, 49000, 1000)]
        )
        self.assertEqual((chunks[-1].final, chunks[-1].status), (True, pb.JOB_STATUS_RUNNING))

        answer = await node.rest("GET", f"/api/jobs/{job_id}/output")
        self.assertEqual(answer.status, 200)
        self.assertTrue(answer.headers["content-type"].startswith("text/event-stream"))
        events = [block.split("\n") for block in answer.body.strip().split("\n\n")[1:]]
        output = json.loads(events[0][-1].removeprefix("data: "))
        self.assertEqual(
            (output["stream"], output["offset"], output["skipped"]), ("stdout", 49000, 49000)
        )
        self.assertEqual(events[-1][0], "event: end")
        self.assertEqual(
            json.loads(events[-1][1].removeprefix("data: ")),
            {"status": "running", "exit_code": None},
        )
        await node.call("CancelJob", pb.CancelJobRequest(job_id=job_id))


class DockerLiveOutputTests(LiveOutputClusterTestCase):
    executor_name = "docker"
    timeout = 300

    async def setUp(self) -> None:
        engine = await deferToThread(docker_engine.prepared_env)
        self.executor_args = ("--executor", "docker", "--image", engine.image)

    async def test_logs_follow_a_container_through_a_node_not_running_it(self):
        cluster = await self.start_cluster()
        await self.follow_through_node_2(cluster, kill_leader=False)
