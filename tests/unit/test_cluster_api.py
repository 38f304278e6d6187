"""ClusterAPI over a real RaftService and JobTable on a Clock: the write path's limits.

The commit stall is made through an interface: a storage provider whose log appends
never complete (a hung disk), so the leader can never count itself toward a commit.
"""

import random
import uuid

import grpc
from twisted.internet import defer, task, threads
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api import errors
from jobsched.api.bridge import ReactorBridge
from jobsched.api.grpc_server import GrpcServerService, SchedulerServicer
from jobsched.app import ClusterAPI
from jobsched.config import NodeConfig
from jobsched.interfaces import IApiServer, IClusterAPI, IRaftStorage
from jobsched.jobs import commands
from jobsched.jobs.table import JobTable
from jobsched.raft.service import RaftService
from jobsched.raft.storage import MemoryStorage


@implementer(IRaftStorage)
class HangingDiskStorage(MemoryStorage):
    """Memory storage whose log appends never complete once `hung` is set."""

    hung = False

    def append(self, entries):
        if self.hung:
            return defer.Deferred()
        return super().append(entries)


class NoPeers:
    def send(self, peer_id, request):
        raise AssertionError("a cluster of one sends nothing")


def build(clock, storage=None, **config):
    table = JobTable()
    raft = RaftService(
        node_id=1,
        peers={},
        self_address="127.0.0.1:50051",
        storage=storage or MemoryStorage(),
        transport=NoPeers(),
        state_machine=table,
        clock=clock,
        rng=random.Random(7),
    )
    api = ClusterAPI(NodeConfig(**config), raft, table, clock)
    return raft, table, api


def elected(clock, raft):
    raft.startService()
    for _ in range(100):
        clock.advance(0.05)
        if raft.status().role == "leader" and raft.status().commit_index >= 1:
            return
    raise AssertionError("a node alone never elected itself")


@defer.inlineCallbacks
def wait_until(predicate, what, timeout=30.0):
    """Poll `predicate` on the real reactor until it holds; fail after `timeout` s."""
    from twisted.internet import reactor

    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        yield task.deferLater(reactor, 0.01, lambda: None)


class WritePathTests(unittest.TestCase):
    """ClusterAPI.submit on a Clock: each limit answers with its own error."""

    def setUp(self):
        self.clock = task.Clock()

    def test_cluster_api_provides_its_interface(self):
        _, _, api = build(self.clock)
        self.assertTrue(verifyObject(IClusterAPI, api))

    def test_no_leader_yet_answers_not_leader_unknown(self):
        raft, _table, api = build(self.clock)
        raft.startService()
        error = self.failureResultOf(api.submit("true"), errors.NotLeader).value
        self.assertEqual(error.message, "Not the leader. Leader unknown, retry later")

    def test_submit_commits_and_returns_the_job(self):
        raft, table, api = build(self.clock)
        elected(self.clock, raft)
        submitted = api.submit("echo hi")
        self.clock.advance(0)
        job = self.successResultOf(submitted)
        self.assertEqual(table.get(job.job_id).command, "echo hi")
        self.assertEqual((job.timeout_seconds, job.image), (30, "alpine:latest"))

    def test_queue_over_256_waiting_proposals_is_refused_at_once_then_all_time_out(self):
        storage = HangingDiskStorage()
        raft, table, api = build(self.clock, storage)
        elected(self.clock, raft)
        storage.hung = True
        waiting = [api.submit(f"echo {n}") for n in range(256)]
        for submitted in waiting:
            self.assertNoResult(submitted)

        refused = self.failureResultOf(api.submit("echo one too many"), errors.Overloaded).value
        self.assertEqual(refused.message, "Server is overloaded; retry with backoff")
        self.assertEqual(refused.grpc_code, grpc.StatusCode.RESOURCE_EXHAUSTED)

        self.clock.advance(4.9)
        for submitted in waiting:
            self.assertNoResult(submitted)
        self.clock.advance(0.2)
        outcomes = [self.failureResultOf(d, errors.CommitTimeout).value for d in waiting]
        self.assertEqual(outcomes[0].message, "Raft did not commit the entry in time")
        self.assertEqual(table.active_count(), 0)  # nothing committed, nothing applied

    def test_ten_thousand_active_jobs_fill_the_queue(self):
        raft, table, api = build(self.clock)
        elected(self.clock, raft)
        for n in range(10_000):
            table.apply(10 + n, commands.submit_job(str(uuid.uuid4()), "true", 1000 + n))
        error = self.failureResultOf(api.submit("true"), errors.QueueFull).value
        self.assertEqual(error.message, "Job queue is at capacity")
        self.assertEqual(table.active_count(), 10_000)

    def test_draining_is_checked_before_anything_else(self):
        raft, _table, api = build(self.clock)
        elected(self.clock, raft)
        api.draining = True
        error = self.failureResultOf(api.submit(""), errors.Draining).value
        self.assertEqual(error.message, "Node is draining and not accepting new jobs")

    def test_stopped_raft_answers_raft_stopped(self):
        raft, _table, api = build(self.clock)
        elected(self.clock, raft)
        raft.stopService()
        error = self.failureResultOf(api.submit("true"), errors.RaftStopped).value
        self.assertEqual(error.message, "Raft loop is not running")


class GrpcWritePathTests(unittest.TestCase):
    """The write path's limits through a real gRPC server on the real reactor."""

    @defer.inlineCallbacks
    def test_grpc_maps_overload_and_commit_timeout_to_their_codes(self):
        """The same stall through a real gRPC server: RESOURCE_EXHAUSTED answered at once
        (before the first submission's commit wait is over), DEADLINE_EXCEEDED after the
        5 s commit wait."""
        from twisted.internet import reactor

        storage = HangingDiskStorage()
        raft, _table, api = build(reactor, storage)
        raft.startService()
        self.addCleanup(raft.stopService)
        server = GrpcServerService("127.0.0.1", 0, [SchedulerServicer(api, ReactorBridge(reactor))])
        server.startService()
        self.addCleanup(server.stopService)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        self.addCleanup(channel.close)
        self.assertTrue(verifyObject(IApiServer, server))
        yield wait_until(api.is_ready, "a node alone elected itself")
        self.assertEqual(raft.status().role, "leader")
        storage.hung = True
        stub = pb_grpc.SchedulerServiceStub(channel)

        def call(command):
            try:
                stub.SubmitJob(pb.SubmitJobRequest(command=command), timeout=15)
            except grpc.RpcError as error:
                return error.code(), error.details(), reactor.seconds()
            return grpc.StatusCode.OK, "", reactor.seconds()

        appended = raft.status().last_log_index
        started = reactor.seconds()
        first = threads.deferToThread(call, "echo first")
        yield wait_until(
            lambda: raft.status().last_log_index > appended, "the first submission was proposed"
        )
        for n in range(255):
            api.submit(f"echo {n}").addErrback(lambda _f: None)
        code, message, refused_at = yield threads.deferToThread(call, "echo too many")
        self.assertEqual(
            (code, message),
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "Server is overloaded; retry with backoff"),
        )

        code, message, timed_out_at = yield first
        self.assertEqual(
            (code, message),
            (grpc.StatusCode.DEADLINE_EXCEEDED, "Raft did not commit the entry in time"),
        )
        self.assertLess(refused_at, timed_out_at)
        # the server's 5 s commit wait, well before the client's own 15 s deadline
        self.assertGreaterEqual(timed_out_at - started, 4.5)
        self.assertLess(timed_out_at - started, 15)
