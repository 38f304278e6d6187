"""StreamJobs against real nodes: streams nobody reads hold no thread and cannot starve
Raft or other clients; a reader that pauses within the stall bound gets its whole
stream; one that stops for longer is dropped with STREAM_STALLED (issue 8, item 4).

The unread streams go over channels whose reader takes only ≈ 1 KiB before HTTP/2 flow
control stops the node's writes, so every stream really waits on its reader; the
node's /metrics tell how many streams it holds open and how many writes wait.
"""

from __future__ import annotations

import grpc
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.net import metadata
from tests.integration.test_cluster import submit_all
from tests.nodeproc import Cluster, Node, NodeFactory, metric_samples, wait_for

SMALL_WINDOWS = [
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1024),
    ("grpc.use_local_subchannel_pool", 1),
]
UNREAD_PER_NODE = 300
CHANNELS_PER_NODE = 6
ANSWER_BOUND_SECONDS = 10
"""A generous bound for a GetJobStatus on a busy 2-core machine (the starvation this
guards against lasted 30 s)."""


async def stream_metrics(node: Node) -> dict[str, float]:
    samples = metric_samples((await node.rest("GET", "/metrics")).body)
    return {name: value for name, value in samples.items() if name.startswith("jobsched_grpc")}


class UnreadStreams:
    """`count` StreamJobs calls to `node`, never read; cancelled in the test's cleanup."""

    def __init__(self, testcase: unittest.TestCase, node: Node, count: int) -> None:
        channels = [
            grpc.insecure_channel(node.grpc_address, SMALL_WINDOWS)
            for _ in range(CHANNELS_PER_NODE)
        ]
        calls = [
            pb_grpc.SchedulerServiceStub(channels[n % len(channels)]).StreamJobs(
                pb.StreamJobsRequest()
            )
            for n in range(count)
        ]
        for channel in channels:
            testcase.addCleanup(channel.close)
        for call in calls:
            testcase.addCleanup(call.cancel)


async def all_waiting_on_readers(node: Node, count: int) -> bool:
    samples = await stream_metrics(node)
    return (
        samples["jobsched_grpc_streams_open"] == count
        and samples["jobsched_grpc_stream_writes_waiting"] == count
    )


class UnreadStreamsTests(unittest.TestCase):
    async def test_unread_streams_on_a_follower_and_the_leader_cause_no_election(self):
        """300 unread streams on a follower and 300 on the leader: the term stays, every
        submit commits and GetJobStatus answers on both within a generous bound.

        Election timeouts of 1-2 s keep the test about starvation (which held the
        cluster leaderless for 15 s) rather than about the machine's load."""
        cluster = Cluster(
            NodeFactory.for_test(self),
            3,
            "--election-timeout-min",
            "1000",
            "--election-timeout-max",
            "2000",
            "--heartbeat-interval",
            "100",
            "--stream-stall-timeout",
            "600",
        )
        leader = await cluster.find_leader()
        follower = next(node for node in cluster.nodes.values() if node is not leader)
        job_ids = await submit_all(leader, 100, prefix="before")
        terms = {n: (await cluster.view(n))["current_term"] for n in cluster.nodes}

        for node in (follower, leader):
            UnreadStreams(self, node, UNREAD_PER_NODE)
        for node in (follower, leader):
            await wait_for(
                lambda node=node: all_waiting_on_readers(node, UNREAD_PER_NODE),
                90,
                f"{UNREAD_PER_NODE} streams on node {node.node_id} waiting on their readers",
                interval=0.5,
            )

        committed = await submit_all(leader, 30, prefix="during", concurrency=4)
        self.assertEqual(len(set(committed)), 30)
        # A follower may apply a commit a moment after the leader answered the client.
        commit_index = (await cluster.view(leader.node_id))["commit_index"]

        async def follower_applied() -> bool:
            return (await cluster.view(follower.node_id))["last_applied"] >= commit_index

        await wait_for(follower_applied, 30, "the follower to apply the submits")
        for node in (follower, leader):
            for job_id in (job_ids[0], committed[-1]):
                reply = await node.call(
                    "GetJobStatus", pb.GetJobStatusRequest(job_id=job_id), ANSWER_BOUND_SECONDS
                )
                self.assertEqual(reply.job_id, job_id)
        for node in (follower, leader):  # still held, still blocked: nothing gave way
            self.assertTrue(await all_waiting_on_readers(node, UNREAD_PER_NODE))
        self.assertEqual({n: (await cluster.view(n))["current_term"] for n in cluster.nodes}, terms)
        self.assertIs(await cluster.find_leader(timeout=10), leader)


class StallBoundTests(unittest.TestCase):
    """One node and one stream read over a small window."""

    async def start_node(self, *options: str) -> tuple[Node, list[str]]:
        node = NodeFactory.for_test(self).start("--executor", "process", *options)
        await node.until_ready()
        return node, await submit_all(node, 150, prefix="stream", concurrency=1)

    def open_stream(self, node: Node):
        channel = grpc.insecure_channel(node.grpc_address, SMALL_WINDOWS)
        self.addCleanup(channel.close)
        stream = pb_grpc.SchedulerServiceStub(channel).StreamJobs(
            pb.StreamJobsRequest(), timeout=120
        )
        self.addCleanup(stream.cancel)
        return stream

    async def test_a_reader_that_pauses_within_the_bound_gets_every_job(self):
        node, job_ids = await self.start_node()  # the default bound: 30 s
        stream = self.open_stream(node)
        first = await deferToThread(next, stream)
        await wait_for(
            lambda: all_waiting_on_readers(node, 1), 30, "the node's write to wait on the reader"
        )
        rest = await deferToThread(lambda: [info.job_id for info in stream])
        self.assertEqual([first.job_id, *rest], job_ids)
        samples = await stream_metrics(node)
        self.assertEqual(samples["jobsched_grpc_streams_dropped_total"], 0)

    async def test_a_reader_that_stops_longer_than_the_bound_is_dropped(self):
        node, job_ids = await self.start_node("--stream-stall-timeout", "1")
        stream = self.open_stream(node)
        received = [(await deferToThread(next, stream)).job_id]

        async def dropped():
            return (await stream_metrics(node))["jobsched_grpc_streams_dropped_total"] == 1

        await wait_for(dropped, 30, "the node to drop the stalled stream")

        def read_rest():
            try:
                for info in stream:
                    received.append(info.job_id)
            except grpc.RpcError as error:
                return error

        error = await deferToThread(read_rest)
        self.assertIsNotNone(error, "the stream ended as if complete")
        self.assertEqual(
            (error.code(), error.details()),
            (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "Stream dropped: the reader read nothing for 1s",
            ),
        )
        self.assertEqual(dict(error.trailing_metadata())[metadata.ERROR_CODE], "STREAM_STALLED")
        self.assertLess(len(received), len(job_ids))
        self.assertEqual(received, job_ids[: len(received)])
        await wait_for(
            lambda: all_waiting_on_readers(node, 0), 30, "the dropped stream's place to be free"
        )
