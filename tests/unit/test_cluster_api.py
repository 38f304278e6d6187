"""ClusterAPI over real RaftServices and JobTables on a Clock: the write path's limits,
what a follower answers, and the views of this node.

The commit stall is made through an interface: a storage provider whose log appends
never complete (a hung disk), so the leader can never count itself toward a commit.
Clusters of several nodes talk through an in-memory transport that hands each request
to the addressed node's RaftService on the next turn of the clock.
"""

import random
import uuid

import grpc
from twisted.internet import defer, task, threads
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobsched import errors
from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.grpc_servicers import SchedulerServicer
from jobsched.api.status import grpc_status
from jobsched.app import ClusterAPI, DrainFlag, SubmitRequest
from jobsched.config import NodeConfig, PeerAddress
from jobsched.interfaces import IApiServer, IClusterAPI, IRaftStorage, IRaftTransport
from jobsched.jobs import commands
from jobsched.jobs.model import JobResult, JobStatus
from jobsched.jobs.table import JobTable, ListQuery
from jobsched.net.bridge import ReactorBridge
from jobsched.net.channels import Wire
from jobsched.net.leader import LeaderClient
from jobsched.net.server import GrpcServerService
from jobsched.raft.core import RaftTimings
from jobsched.raft.service import RaftService
from jobsched.raft.storage import MemoryStorage
from jobsched.registry import WorkerRegistry
from jobsched.routing import Router
from tests.nodeproc import wait_for

ADDRESSES = {n: PeerAddress("127.0.0.1", 50050 + n) for n in (1, 2, 3)}
EXPIRY = 5.0
# Every node but node 1 waits far longer before it stands for election: node 1 leads.
PATIENT = RaftTimings(election_timeout_min=100.0, election_timeout_max=100.0)


@implementer(IRaftStorage)
class HangingDiskStorage(MemoryStorage):
    """Memory storage whose log appends never complete once `hung` is set."""

    hung = False

    def append(self, entries):
        if self.hung:
            return defer.Deferred()
        return super().append(entries)


@implementer(IRaftTransport)
class NoPeers:
    def send(self, peer_id, request):
        raise AssertionError("a cluster of one sends nothing")


@implementer(IRaftTransport)
class LocalNetwork:
    """Delivers each request to the addressed node's RaftService on the next turn of
    the clock (never re-entrantly)."""

    def __init__(self, clock):
        self.clock = clock
        self.nodes = {}

    def send(self, peer_id, request):
        return task.deferLater(self.clock, 0, self.nodes[peer_id].raft.handle, request)


class Node:
    """One node's parts as NodeService wires them: Raft, job table, worker registry,
    drain flag and the ClusterAPI over them."""

    def __init__(self, clock, storage=None, transport=None, timings=RaftTimings(), **config):
        self.clock = clock
        self.config = NodeConfig(**config)
        self.table = JobTable()
        self.raft = RaftService(
            node_id=self.config.node_id,
            peers={peer_id: str(peer) for peer_id, peer in self.config.peers.items()},
            self_address=self.config.advertise_addr,
            storage=storage or MemoryStorage(),
            transport=transport or NoPeers(),
            state_machine=self.table,
            clock=clock,
            rng=random.Random(7),
            timings=timings,
        )
        self.registry = WorkerRegistry(clock, self.config.worker_expiry, self.config.peers)
        self.drain_flag = DrainFlag()
        self.api = ClusterAPI(
            self.config, self.raft, self.table, self.registry, self.drain_flag, clock
        )


def build(clock, storage=None, **config):
    """A node alone (a cluster of one), not started."""
    return Node(clock, storage, **config)


def elected(clock, raft):
    """Start a node alone and let it elect itself and commit its first entry."""
    raft.startService()
    for _ in range(100):
        clock.advance(0.05)
        if raft.status().role == "leader" and raft.status().commit_index >= 1:
            return
    raise AssertionError("a node alone never elected itself")


def cluster(test, clock, size=2):
    """Nodes 1..size on one in-memory network, started (and stopped at the end of
    `test`), once node 1 leads and every other node follows it: [leader, *followers]."""
    network = LocalNetwork(clock)
    ids = list(ADDRESSES)[:size]
    network.nodes = {
        node_id: Node(
            clock,
            transport=network,
            timings=RaftTimings() if node_id == 1 else PATIENT,
            node_id=node_id,
            port=ADDRESSES[node_id].port,
            peers={peer: ADDRESSES[peer] for peer in ids if peer != node_id},
            worker_expiry=EXPIRY,
        )
        for node_id in ids
    }
    nodes = [network.nodes[node_id] for node_id in ids]
    for node in nodes:
        node.raft.startService()
        test.addCleanup(stop, node)
    for _ in range(200):
        clock.advance(0.05)
        if nodes[0].raft.status().role == "leader" and all(
            node.raft.status().leader_id == 1 and node.raft.status().commit_index >= 1
            for node in nodes[1:]
        ):
            return nodes
    raise AssertionError("node 1 never became the leader of the cluster")


def stop(node):
    if node.raft.running:
        node.raft.stopService()


def committed(clock, deferred):
    """Let the clock turn until `deferred` fired; its result (a failure is raised)."""
    outcome = []
    deferred.addBoth(outcome.append)
    for _ in range(100):
        if outcome:
            break
        clock.advance(0.01)
    if not outcome:
        raise AssertionError("never committed")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def wait_until(predicate, what, timeout=30.0) -> defer.Deferred:
    """Poll `predicate` on the real reactor until it holds; fail after `timeout` s."""
    return defer.ensureDeferred(wait_for(predicate, timeout, what, interval=0.01))


class WritePathTests(unittest.TestCase):
    """ClusterAPI.submit on a Clock: each limit answers with its own error."""

    def setUp(self):
        self.clock = task.Clock()

    def test_cluster_api_provides_its_interface(self):
        self.assertTrue(verifyObject(IClusterAPI, build(self.clock).api))

    def test_no_leader_yet_answers_not_leader_unknown(self):
        node = build(self.clock)
        node.raft.startService()
        error = self.failureResultOf(node.api.submit(SubmitRequest("true")), errors.NotLeader)
        self.assertEqual(error.value.message, "Not the leader. Leader unknown, retry later")
        self.assertEqual((error.value.code, error.value.leader_address), ("NOT_LEADER", None))

    def test_submit_commits_and_returns_the_job(self):
        node = build(self.clock)
        elected(self.clock, node.raft)
        submitted = node.api.submit(SubmitRequest("echo hi"))
        self.clock.advance(0)
        job = self.successResultOf(submitted)
        self.assertEqual(node.table.get(job.job_id).command, "echo hi")
        self.assertEqual((job.timeout_seconds, job.image), (30, "alpine:latest"))
        self.assertEqual(job.max_attempts, 3)

    def test_queue_over_256_waiting_proposals_is_refused_at_once_then_all_time_out(self):
        storage = HangingDiskStorage()
        node = build(self.clock, storage)
        elected(self.clock, node.raft)
        storage.hung = True
        waiting = [node.api.submit(SubmitRequest(f"echo {n}")) for n in range(256)]
        for submitted in waiting:
            self.assertNoResult(submitted)

        refused = self.failureResultOf(
            node.api.submit(SubmitRequest("echo one too many")), errors.Overloaded
        ).value
        self.assertEqual(refused.message, "Server is overloaded; retry with backoff")
        self.assertEqual(refused.code, "OVERLOADED")
        self.assertEqual(grpc_status(refused), grpc.StatusCode.RESOURCE_EXHAUSTED)

        self.clock.advance(4.9)
        for submitted in waiting:
            self.assertNoResult(submitted)
        self.clock.advance(0.2)
        outcomes = [self.failureResultOf(d, errors.CommitTimeout).value for d in waiting]
        self.assertEqual(outcomes[0].message, "Raft did not commit the entry in time")
        self.assertEqual(node.table.active_count(), 0)  # nothing committed, nothing applied

    def test_ten_thousand_active_jobs_fill_the_queue(self):
        node = build(self.clock)
        elected(self.clock, node.raft)
        for n in range(10_000):
            node.table.apply(10 + n, commands.submit_job(str(uuid.uuid4()), "true", 1000 + n))
        error = self.failureResultOf(node.api.submit(SubmitRequest("true")), errors.QueueFull)
        self.assertEqual(error.value.message, "Job queue is at capacity")
        self.assertEqual(node.table.active_count(), 10_000)

    def test_draining_is_checked_before_anything_else(self):
        node = build(self.clock)
        elected(self.clock, node.raft)
        node.drain_flag.active = True
        self.assertTrue(node.api.draining)
        error = self.failureResultOf(node.api.submit(SubmitRequest("")), errors.Draining)
        self.assertEqual(error.value.message, "Node is draining and not accepting new jobs")

    def test_stopped_raft_answers_raft_stopped(self):
        node = build(self.clock)
        elected(self.clock, node.raft)
        node.raft.stopService()
        error = self.failureResultOf(node.api.submit(SubmitRequest("true")), errors.RaftStopped)
        self.assertEqual(error.value.message, "Raft loop is not running")

    def test_check_submission_fills_in_the_server_defaults(self):
        api = build(self.clock, image="busybox:1", job_timeout=12, max_attempts=4).api
        checked = api.check_submission(SubmitRequest("true"))
        self.assertEqual(
            (checked.image, checked.timeout_seconds, checked.max_attempts), ("busybox:1", 12, 4)
        )
        asked = SubmitRequest("true", image="alpine:3", timeout_seconds=7, max_attempts=10)
        self.assertEqual(api.check_submission(asked), asked)

    def test_check_submission_refuses_more_than_ten_attempts(self):
        api = build(self.clock).api
        with self.assertRaises(errors.InvalidArgument) as caught:
            api.check_submission(SubmitRequest("true", max_attempts=11))
        self.assertEqual(caught.exception.message, "max_attempts must be from 1 to 10")


class FollowerTests(unittest.TestCase):
    """A follower answers no write itself and names the leader it hears from."""

    def setUp(self):
        self.clock = task.Clock()
        self.leader, self.follower = cluster(self, self.clock)

    def test_follower_refuses_writes_naming_the_leader(self):
        api = self.follower.api
        self.assertFalse(api.is_leader())
        self.assertTrue(api.is_ready())
        for write in (
            lambda: api.submit(SubmitRequest("true")),
            lambda: api.cancel(str(uuid.uuid4())),
            lambda: api.accept_results([]),
        ):
            error = self.failureResultOf(write(), errors.NotLeader).value
            self.assertEqual(error.leader_address, "127.0.0.1:50051")
            self.assertEqual(error.message, "Not the leader. Try 127.0.0.1:50051")

    def test_follower_still_checks_a_submission_itself(self):
        with self.assertRaises(errors.InvalidArgument):
            self.follower.api.check_submission(SubmitRequest("true", max_attempts=11))

    def test_follower_reads_its_own_applied_state(self):
        job = committed(self.clock, self.leader.api.submit(SubmitRequest("echo hi")))
        self.clock.pump([0.05] * 4)  # the next heartbeats carry the commit index
        self.assertEqual(self.follower.api.get_job(job.job_id), job)
        self.assertEqual(self.follower.api.job_counts()[JobStatus.PENDING], 1)
        page = self.follower.api.list_jobs(ListQuery())
        self.assertEqual([listed.job_id for listed in page.jobs], [job.job_id])


class CancelAndResultsTests(unittest.TestCase):
    """cancel and accept_results on a leader alone."""

    def setUp(self):
        self.clock = task.Clock()
        self.node = build(self.clock)
        elected(self.clock, self.node.raft)

    def submit(self):
        return committed(self.clock, self.node.api.submit(SubmitRequest("true")))

    def test_cancel_returns_the_canonical_id_once_committed(self):
        job = self.submit()
        cancelled = self.node.api.cancel(job.job_id.upper())
        self.assertEqual(committed(self.clock, cancelled), job.job_id)
        self.assertIs(self.node.table.get(job.job_id).status, JobStatus.CANCELLED)

    def test_cancel_errors(self):
        api = self.node.api
        error = self.failureResultOf(api.cancel("nope"), errors.InvalidArgument).value
        self.assertEqual(error.message, "invalid job_id")
        error = self.failureResultOf(api.cancel(str(uuid.uuid4())), errors.NotFound).value
        self.assertEqual(error.message, "job not found")
        job = self.submit()
        committed(self.clock, api.cancel(job.job_id))
        error = self.failureResultOf(api.cancel(job.job_id), errors.AlreadyTerminal).value
        self.assertEqual(
            (error.message, error.code), ("job is already cancelled", "ALREADY_TERMINAL")
        )

    def test_accept_results_commits_them_as_one_batch(self):
        jobs = [self.submit() for _ in range(2)]
        for job in jobs:
            committed(self.clock, self.node.raft.propose(commands.assign_job(job.job_id, 2, 1)))
        done = JobResult(JobStatus.COMPLETED, 0, "out", "", False, 1000, 2000)
        updates = [commands.status_update(job.job_id, done, 2, 1) for job in jobs]
        before = self.node.raft.status().last_log_index
        committed(self.clock, self.node.api.accept_results(updates))
        self.assertEqual(self.node.raft.status().last_log_index, before + 1)
        for job in jobs:
            self.assertIs(self.node.table.get(job.job_id).status, JobStatus.COMPLETED)

    def test_accept_results_with_nothing_to_accept_proposes_nothing(self):
        before = self.node.raft.status().last_log_index
        self.assertIsNone(self.successResultOf(self.node.api.accept_results([])))
        self.assertEqual(self.node.raft.status().last_log_index, before)


class ViewTests(unittest.TestCase):
    """cluster_view and raft_log_view: this node's picture."""

    def setUp(self):
        self.clock = task.Clock()

    def test_leader_view_shows_peers_progress_and_draining(self):
        leader, follower = cluster(self, self.clock)
        leader.registry.record(2, [], 4, True, 22)
        view = leader.api.cluster_view()
        self.assertEqual(
            (view.current_term, view.leader_id), (leader.raft.status().current_term, 1)
        )
        first, second = view.nodes
        self.assertEqual(
            (first.node_id, first.address, first.is_alive, first.role, first.draining),
            (1, "127.0.0.1:50051", True, "leader", False),
        )
        self.assertEqual(first.match_index, leader.raft.status().last_log_index)
        self.assertEqual(
            (second.node_id, second.address, second.is_alive, second.role, second.draining),
            (2, "127.0.0.1:50052", True, "follower", True),
        )
        self.assertEqual(second.match_index, follower.raft.status().last_log_index)

    def test_views_show_the_entry_forms_each_node_applies_as_known_there(self):
        leader, follower, _third = cluster(self, self.clock, size=3)
        leader.registry.record(2, [], 4, False, 22, entry_forms=2)
        leader.registry.record(3, [], 4, False, 33)  # a version from before forms
        self.assertEqual([n.entry_forms for n in leader.api.cluster_view().nodes], [2, 2, 0])
        self.assertEqual([n.entry_forms for n in follower.api.cluster_view().nodes], [0, 2, 0])
        self.assertEqual(leader.api.cluster_view().entry_forms, 1)  # what the cluster writes
        committed(self.clock, leader.raft.propose(commands.entry_forms(2)))
        self.clock.pump([0.05] * 5)
        self.assertEqual(follower.api.cluster_view().entry_forms, 2)

    def test_leader_view_shows_a_silent_peer_as_unknown(self):
        """Node 3 stops answering; node 1 still leads with node 2 and shows node 3 as
        not alive, role unknown, once it has been silent for over 3 s."""
        leader, _follower, silent = cluster(self, self.clock, size=3)
        silent.raft.stopService()
        self.clock.pump([0.05] * 50)
        third = leader.api.cluster_view().nodes[2]
        self.assertEqual((third.node_id, third.is_alive, third.role), (3, True, "follower"))
        self.clock.pump([0.05] * 20)
        self.assertTrue(leader.api.is_leader())
        view = leader.api.cluster_view()
        self.assertEqual([node.is_alive for node in view.nodes], [True, True, False])
        self.assertEqual((view.nodes[2].role, view.nodes[2].draining), ("unknown", False))

    def test_follower_view_knows_only_itself_and_the_leader(self):
        _leader, follower = cluster(self, self.clock)
        follower.drain_flag.active = True
        first, second = follower.api.cluster_view().nodes
        self.assertEqual((first.node_id, first.is_alive, first.role), (1, False, "leader"))
        self.assertEqual((second.node_id, second.is_alive, second.role), (2, True, "follower"))
        self.assertTrue(second.draining)

    def test_raft_log_view_decodes_each_entry(self):
        node = build(self.clock)
        elected(self.clock, node.raft)
        job = committed(self.clock, node.api.submit(SubmitRequest("echo hi")))
        view = node.api.raft_log_view(0, 0)
        self.assertEqual([entry.index for entry in view.entries], [1, 2])
        noop, submitted = view.entries
        self.assertIsNone(noop.command.WhichOneof("command_type"))
        self.assertEqual(submitted.command.submit_job.job_id, job.job_id)
        self.assertEqual(submitted.term, node.raft.status().current_term)
        self.assertEqual(
            (view.commit_index, view.last_log_index, view.first_available_index), (2, 2, 1)
        )
        self.assertEqual([e.index for e in node.api.raft_log_view(2, 5).entries], [2])
        self.assertEqual([e.index for e in node.api.raft_log_view(1, 1).entries], [1])


class GrpcWritePathTests(unittest.TestCase):
    """The write path's limits through a real gRPC server on the real reactor."""

    @defer.inlineCallbacks
    def test_grpc_maps_overload_and_commit_timeout_to_their_codes(self):
        """The same stall through a real gRPC server: RESOURCE_EXHAUSTED answered at once
        (before the first submission's commit wait is over), DEADLINE_EXCEEDED after the
        5 s commit wait."""
        from twisted.internet import reactor

        storage = HangingDiskStorage()
        node = build(reactor, storage)
        raft, api = node.raft, node.api
        raft.startService()
        self.addCleanup(raft.stopService)
        wire = Wire()
        leader_client = LeaderClient(lambda: raft.status().leader_address, wire, reactor)
        self.addCleanup(leader_client.close)
        servicer = SchedulerServicer(api, Router(api, leader_client), ReactorBridge(reactor))
        server = GrpcServerService("127.0.0.1", 0, [servicer.register], wire)
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
            api.submit(SubmitRequest(f"echo {n}")).addErrback(lambda _f: None)
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
