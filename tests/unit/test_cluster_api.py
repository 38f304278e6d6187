"""ClusterAPI over a real RaftService and JobTable on a Clock: the write path's limits.

The commit stall is made through an interface: a storage provider whose log appends
never complete (a hung disk), so the leader can never count itself toward a commit.
"""

import random
import uuid

import grpc
import pytest_twisted
from twisted.internet import defer, task, threads
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


def failure_of(deferred):
    failures = []
    deferred.addErrback(failures.append)
    return failures[0].value if failures else None


def test_cluster_api_provides_its_interface():
    clock = task.Clock()
    _, _, api = build(clock)
    assert verifyObject(IClusterAPI, api)


def test_no_leader_yet_answers_not_leader_unknown():
    clock = task.Clock()
    raft, _table, api = build(clock)
    raft.startService()
    error = failure_of(api.submit("true"))
    assert isinstance(error, errors.NotLeader)
    assert error.message == "Not the leader. Leader unknown, retry later"


def test_submit_commits_and_returns_the_job():
    clock = task.Clock()
    raft, table, api = build(clock)
    elected(clock, raft)
    jobs = []
    api.submit("echo hi").addCallback(jobs.append)
    clock.advance(0)
    assert jobs and table.get(jobs[0].job_id).command == "echo hi"
    assert jobs[0].timeout_seconds == 30 and jobs[0].image == "alpine:latest"


def test_queue_over_256_waiting_proposals_is_refused_at_once_then_all_time_out():
    clock = task.Clock()
    storage = HangingDiskStorage()
    raft, table, api = build(clock, storage)
    elected(clock, raft)
    storage.hung = True
    waiting = [api.submit(f"echo {n}") for n in range(256)]
    assert not any(d.called for d in waiting)

    refused = failure_of(api.submit("echo one too many"))
    assert isinstance(refused, errors.Overloaded)
    assert refused.message == "Server is overloaded; retry with backoff"
    assert refused.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED

    clock.advance(4.9)
    assert not any(d.called for d in waiting)
    clock.advance(0.2)
    outcomes = [failure_of(d) for d in waiting]
    assert all(isinstance(error, errors.CommitTimeout) for error in outcomes)
    assert outcomes[0].message == "Raft did not commit the entry in time"
    assert table.active_count() == 0  # nothing committed, nothing applied


def test_ten_thousand_active_jobs_fill_the_queue():
    clock = task.Clock()
    raft, table, api = build(clock)
    elected(clock, raft)
    for n in range(10_000):
        table.apply(10 + n, commands.submit_job(str(uuid.uuid4()), "true", 1000 + n))
    error = failure_of(api.submit("true"))
    assert isinstance(error, errors.QueueFull)
    assert error.message == "Job queue is at capacity"
    assert table.active_count() == 10_000


def test_draining_is_checked_before_anything_else():
    clock = task.Clock()
    raft, _table, api = build(clock)
    elected(clock, raft)
    api.draining = True
    error = failure_of(api.submit(""))
    assert isinstance(error, errors.Draining)
    assert error.message == "Node is draining and not accepting new jobs"


def test_stopped_raft_answers_raft_stopped():
    clock = task.Clock()
    raft, _table, api = build(clock)
    elected(clock, raft)
    raft.stopService()
    error = failure_of(api.submit("true"))
    assert isinstance(error, errors.RaftStopped)
    assert error.message == "Raft loop is not running"


@pytest_twisted.inlineCallbacks
def test_grpc_maps_overload_and_commit_timeout_to_their_codes():
    """The same stall through a real gRPC server: RESOURCE_EXHAUSTED answered at once,
    DEADLINE_EXCEEDED after the 5 s commit wait."""
    from twisted.internet import reactor

    storage = HangingDiskStorage()
    raft, _table, api = build(reactor, storage)
    raft.startService()
    server = GrpcServerService("127.0.0.1", 0, [SchedulerServicer(api, ReactorBridge(reactor))])
    server.startService()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        assert verifyObject(IApiServer, server)
        for _ in range(100):
            if api.is_ready():
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert raft.status().role == "leader"
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
        for _ in range(100):
            if raft.status().last_log_index > appended:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        for n in range(255):
            api.submit(f"echo {n}").addErrback(lambda _f: None)
        code, message, at = yield threads.deferToThread(call, "echo too many")
        assert (code, message) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Server is overloaded; retry with backoff",
        )
        assert at - started < 2.0

        code, message, at = yield first
        assert (code, message) == (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "Raft did not commit the entry in time",
        )
        assert 4.5 <= at - started <= 10
    finally:
        channel.close()
        yield server.stopService()
        yield raft.stopService()
