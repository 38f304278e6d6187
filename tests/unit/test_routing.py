"""Router: every call that may need the leader is answered here on the leader, or goes
to the leader from a follower; the leader's answer, or its typed error, comes back
unchanged.

The ClusterAPIs are real (tests.unit.test_cluster_api): a leader alone, or node 2 of a
two-node cluster following node 1, on a Clock. The leader client is a fake that records
each call and lets the test answer it, except in RealLeaderTests, where a real
LeaderClient calls a real leader's gRPC server on the real reactor.
"""

import uuid

from twisted.internet import defer, task
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from jobsched import errors
from jobsched._proto import scheduler_pb2 as pb
from jobsched.api.grpc_servicers import InternalServicer, SchedulerServicer
from jobsched.app import ClusterView, LogEntryView, LogView, NodeView, SubmitRequest
from jobsched.dispatch import Dispatcher
from jobsched.interfaces import ILeaderClient, IPeerResults, IRouter
from jobsched.jobs import commands
from jobsched.jobs.model import JobResult, JobStatus
from jobsched.net.bridge import ReactorBridge
from jobsched.net.channels import Wire
from jobsched.net.leader import LeaderClient
from jobsched.net.server import GrpcServerService
from jobsched.routing import (
    FORWARDED_WRITE_TIMEOUT_SECONDS,
    RESULTS_TIMEOUT_SECONDS,
    TRANSFER_TIMEOUT_SECONDS,
    Router,
)
from jobsched.scheduler import Assigner
from tests.cases import add_cases
from tests.unit.test_cluster_api import build, cluster, committed, elected, wait_until

SUBMISSION = SubmitRequest(
    "echo hi", image="busybox:1", timeout_seconds=9, idempotency_key="k", max_attempts=2
)


@implementer(ILeaderClient)
class FakeLeaderClient:
    """ILeaderClient: records (service, method, request, timeout) of each call; the
    test answers or fails the returned Deferred."""

    def __init__(self):
        self.calls = []
        self._pending = []

    def scheduler(self, method, request, timeout=0):
        return self._call("scheduler", method, request, timeout)

    def internal(self, method, request, timeout=0):
        return self._call("internal", method, request, timeout)

    def _call(self, service, method, request, timeout):
        self.calls.append((service, method, request, timeout))
        d = defer.Deferred()
        self._pending.append(d)
        return d

    def close(self):
        pass

    def answer(self, reply):
        self._pending.pop(0).callback(reply)

    def fail(self, error):
        self._pending.pop(0).errback(error)


@implementer(IPeerResults)
class PeerResultsStub:
    """IPeerResults: records each delivery; `answer` is what send_results returns."""

    def __init__(self):
        self.sent = []
        self.answer = defer.Deferred()

    def send_results(self, request, timeout):
        if self.answer is not None:
            self.sent.append((request, timeout))
        return self.answer


def result(status=JobStatus.COMPLETED):
    return JobResult(status, 0, "out", "", False, 1000, 2000)


class RouterTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.leader_client = FakeLeaderClient()

    def on_leader(self):
        """A router on an elected node alone."""
        node = build(self.clock)
        elected(self.clock, node.raft)
        self.addCleanup(node.raft.stopService)
        return node, Router(node.api, self.leader_client)

    def on_follower(self):
        """A router on node 2, following node 1 (returned too)."""
        leader, follower = cluster(self, self.clock)
        return leader, follower, Router(follower.api, self.leader_client)

    def assertNothingForwarded(self):
        self.assertEqual(self.leader_client.calls, [])


class HereOnTheLeaderTests(RouterTestCase):
    """On the leader every call is answered by this node's ClusterAPI."""

    def test_router_provides_its_interface(self):
        _node, router = self.on_leader()
        self.assertTrue(verifyObject(IRouter, router))

    def test_leader_clients_provide_their_interface(self):
        self.assertTrue(verifyObject(ILeaderClient, self.leader_client))
        real = LeaderClient(lambda: None, Wire(), task.Clock())
        self.addCleanup(real.close)
        self.assertTrue(verifyObject(ILeaderClient, real))

    def test_submit_commits_here(self):
        node, router = self.on_leader()
        job_id, status = committed(self.clock, router.submit(SUBMISSION))
        self.assertEqual(status, "pending")
        job = node.table.get(job_id)
        self.assertEqual(
            (job.command, job.image, job.timeout_seconds, job.max_attempts),
            ("echo hi", "busybox:1", 9, 2),
        )
        self.assertNothingForwarded()

    def test_submit_repeated_key_answers_the_existing_jobs_status(self):
        node, router = self.on_leader()
        job_id, _status = committed(self.clock, router.submit(SUBMISSION))
        committed(self.clock, node.raft.propose(commands.assign_job(job_id, 1, 1)))
        self.assertEqual(committed(self.clock, router.submit(SUBMISSION)), (job_id, "running"))

    def test_cancel_commits_here(self):
        node, router = self.on_leader()
        job_id, _status = committed(self.clock, router.submit(SUBMISSION))
        self.assertEqual(committed(self.clock, router.cancel(job_id.upper())), job_id)
        self.assertIs(node.table.get(job_id).status, JobStatus.CANCELLED)
        self.assertNothingForwarded()

    def test_cluster_status_is_this_nodes_view(self):
        node, router = self.on_leader()
        view = self.successResultOf(router.cluster_status())
        self.assertEqual(view, node.api.cluster_view())
        self.assertEqual((view.leader_id, [n.role for n in view.nodes]), (1, ["leader"]))
        self.assertNothingForwarded()

    def test_raft_log_is_this_nodes_log(self):
        node, router = self.on_leader()
        committed(self.clock, router.submit(SUBMISSION))
        view = self.successResultOf(router.raft_log(2, 10))
        self.assertEqual(view, node.api.raft_log_view(2, 10))
        self.assertEqual([entry.command.submit_job.command for entry in view.entries], ["echo hi"])
        self.assertNothingForwarded()

    def test_results_are_committed_here(self):
        node, router = self.on_leader()
        job_id, _status = committed(self.clock, router.submit(SUBMISSION))
        committed(self.clock, node.raft.propose(commands.assign_job(job_id, 1, 1)))
        committed(
            self.clock, router.deliver_results([commands.status_update(job_id, result(), 1, 1)])
        )
        self.assertIs(node.table.get(job_id).status, JobStatus.COMPLETED)
        self.assertNothingForwarded()

    def test_transfer_is_answered_here(self):
        _node, router = self.on_leader()
        outcome = self.successResultOf(router.transfer_leadership(0))
        self.assertEqual(outcome, (False, "No peers available for transfer", 0))
        self.assertNothingForwarded()

    def test_a_leaders_heartbeat_goes_nowhere(self):
        _node, router = self.on_leader()
        request = pb.WorkerHeartbeatRequest(node_id=1)
        self.assertIsNone(self.successResultOf(router.send_heartbeat(request, 2.0)))
        self.assertNothingForwarded()

    def test_errors_of_this_node_come_back_unchanged(self):
        _node, router = self.on_leader()
        error = self.failureResultOf(router.cancel(str(uuid.uuid4())), errors.NotFound).value
        self.assertEqual(error.message, "job not found")
        refused = SubmitRequest("echo hi", max_attempts=11)
        self.failureResultOf(router.submit(refused), errors.InvalidArgument)
        self.assertNothingForwarded()


class ForwardedFromAFollowerTests(RouterTestCase):
    """On a follower each call goes to the leader, and its answer comes back."""

    def test_submit_is_checked_here_then_forwarded(self):
        _leader, _follower, router = self.on_follower()
        submitted = router.submit(SUBMISSION)
        [(service, method, request, timeout)] = self.leader_client.calls
        self.assertEqual((service, method), ("scheduler", "SubmitJob"))
        self.assertEqual(
            request,
            pb.SubmitJobRequest(
                command="echo hi",
                image="busybox:1",
                timeout_seconds=9,
                idempotency_key="k",
                max_attempts=2,
            ),
        )
        self.assertEqual(timeout, FORWARDED_WRITE_TIMEOUT_SECONDS)
        self.assertNoResult(submitted)
        self.leader_client.answer(pb.SubmitJobResponse(job_id="the-id", created_at_ms=5))
        self.assertEqual(self.successResultOf(submitted), ("the-id", "pending"))

    def test_forwarded_submit_leaves_the_defaults_to_the_leader(self):
        _leader, _follower, router = self.on_follower()
        router.submit(SubmitRequest("true"))
        [(_service, _method, request, _timeout)] = self.leader_client.calls
        self.assertFalse(request.HasField("image"))
        self.assertEqual((request.timeout_seconds, request.max_attempts), (0, 0))

    def test_a_submission_refused_here_is_not_forwarded(self):
        _leader, follower, router = self.on_follower()
        refused = SubmitRequest("echo hi", max_attempts=11)
        error = self.failureResultOf(router.submit(refused), errors.InvalidArgument).value
        self.assertEqual(error.message, "max_attempts must be from 1 to 10")
        follower.drain_flag.active = True
        self.failureResultOf(router.submit(SUBMISSION), errors.Draining)
        self.assertNothingForwarded()

    def test_cancel_is_forwarded_and_answers_the_canonical_id(self):
        _leader, _follower, router = self.on_follower()
        job_id = str(uuid.uuid4())
        cancelled = router.cancel(job_id.upper())
        [(service, method, request, timeout)] = self.leader_client.calls
        self.assertEqual((service, method), ("scheduler", "CancelJob"))
        self.assertEqual(
            (request.job_id, timeout), (job_id.upper(), FORWARDED_WRITE_TIMEOUT_SECONDS)
        )
        self.leader_client.answer(pb.CancelJobResponse(success=True))
        self.assertEqual(self.successResultOf(cancelled), job_id)

    def test_cluster_status_is_the_leaders_view(self):
        _leader, _follower, router = self.on_follower()
        viewed = router.cluster_status()
        [(service, method, request, _timeout)] = self.leader_client.calls
        self.assertEqual(
            (service, method, request),
            ("scheduler", "GetClusterStatus", pb.GetClusterStatusRequest()),
        )
        nodes = [
            pb.NodeInfo(node_id=1, address="a:1", is_alive=True, role="leader", match_index=7),
            pb.NodeInfo(node_id=2, address="a:2", role="follower", match_index=6, draining=True),
        ]
        self.leader_client.answer(
            pb.GetClusterStatusResponse(current_term=3, leader_id=1, nodes=nodes)
        )
        self.assertEqual(
            self.successResultOf(viewed),
            ClusterView(
                3,
                1,
                [
                    NodeView(1, "a:1", True, "leader", 7, False),
                    NodeView(2, "a:2", False, "follower", 6, True),
                ],
            ),
        )

    def test_raft_log_is_the_leaders_log(self):
        _leader, _follower, router = self.on_follower()
        viewed = router.raft_log(5, 2)
        [(service, method, request, _timeout)] = self.leader_client.calls
        self.assertEqual((service, method), ("scheduler", "GetRaftLogEntries"))
        self.assertEqual((request.start_index, request.limit), (5, 2))
        submit = pb.Command.FromString(commands.submit_job("j", "true", 1))
        reply = pb.GetRaftLogEntriesResponse(
            entries=[
                pb.RaftLogEntryInfo(index=5, term=2, command=pb.Command(), is_committed=True),
                pb.RaftLogEntryInfo(index=6, term=2, command=submit),
            ],
            commit_index=5,
            last_log_index=6,
            first_available_index=3,
        )
        self.leader_client.answer(reply)
        self.assertEqual(
            self.successResultOf(viewed),
            LogView([LogEntryView(5, 2, pb.Command()), LogEntryView(6, 2, submit)], 5, 6, 3),
        )

    def test_transfer_is_carried_out_by_the_leader(self):
        _leader, _follower, router = self.on_follower()
        transferred = router.transfer_leadership(2)
        [(service, method, request, timeout)] = self.leader_client.calls
        self.assertEqual(
            (service, method, request.target_node_id), ("scheduler", "TransferLeadership", 2)
        )
        self.assertEqual(timeout, TRANSFER_TIMEOUT_SECONDS)
        self.leader_client.answer(
            pb.TransferLeadershipResponse(success=True, message="done", new_leader_id=2)
        )
        self.assertEqual(self.successResultOf(transferred), (True, "done", 2))

    def test_results_are_forwarded_to_the_leader(self):
        _leader, _follower, router = self.on_follower()
        updates = [commands.status_update("j", result(), 2, 1)]
        delivered = router.deliver_results(updates)
        [(service, method, request, timeout)] = self.leader_client.calls
        self.assertEqual((service, method), ("internal", "ForwardJobStatus"))
        self.assertEqual(list(request.updates), updates)
        self.assertEqual(timeout, RESULTS_TIMEOUT_SECONDS)
        self.assertNoResult(delivered)
        self.leader_client.answer(pb.ForwardJobStatusResponse())
        self.successResultOf(delivered)

    def test_results_go_on_the_leaders_peer_port_connection_when_it_takes_them(self):
        _leader, follower, _router = self.on_follower()
        connection = PeerResultsStub()
        self.assertTrue(verifyObject(IPeerResults, connection))
        router = Router(follower.api, self.leader_client, peer_results=connection)
        updates = [commands.status_update("j", result(), 2, 1)]
        delivered = router.deliver_results(updates)
        self.assertNothingForwarded()
        [(request, timeout)] = connection.sent
        self.assertEqual((list(request.updates), timeout), (updates, RESULTS_TIMEOUT_SECONDS))
        connection.answer.callback(pb.ForwardJobStatusResponse())
        self.successResultOf(delivered)
        connection.answer = None  # no connection of the current leader takes them now
        router.deliver_results(updates)
        [(_service, method, _request, _timeout)] = self.leader_client.calls
        self.assertEqual(method, "ForwardJobStatus")

    def test_heartbeat_is_forwarded_with_the_senders_timeout(self):
        _leader, _follower, router = self.on_follower()
        request = pb.WorkerHeartbeatRequest(node_id=2, running_job_ids=["a"], free_slots=3)
        sent = router.send_heartbeat(request, 1.5)
        self.assertEqual(self.leader_client.calls, [("internal", "WorkerHeartbeat", request, 1.5)])
        self.leader_client.answer(pb.WorkerHeartbeatResponse())
        self.successResultOf(sent)

    def check_leader_error_passes_through(self, case):
        """A typed error of the leader (or of the way to it) comes back as it is."""
        call, error = case
        _leader, _follower, router = self.on_follower()
        answered = call(router)
        self.assertEqual(len(self.leader_client.calls), 1)
        self.leader_client.fail(error)
        self.assertIs(self.failureResultOf(answered, type(error)).value, error)


add_cases(
    ForwardedFromAFollowerTests,
    "test_leader_error_passes_through",
    {
        "submit_not_leader": (
            lambda router: router.submit(SUBMISSION),
            errors.NotLeader("127.0.0.1:50053"),
        ),
        "submit_queue_full": (lambda router: router.submit(SUBMISSION), errors.QueueFull()),
        "cancel_already_terminal": (
            lambda router: router.cancel(str(uuid.uuid4())),
            errors.AlreadyTerminal.for_status("completed"),
        ),
        "cluster_status_no_leader": (lambda router: router.cluster_status(), errors.NoLeader()),
        "raft_log_unreachable": (
            lambda router: router.raft_log(0, 0),
            errors.LeaderUnreachable("UNAVAILABLE"),
        ),
        "deliver_results_leadership_lost": (
            lambda router: router.deliver_results([]),
            errors.LeadershipLost(),
        ),
        "send_heartbeat_not_leader": (
            lambda router: router.send_heartbeat(pb.WorkerHeartbeatRequest(node_id=2), 2.0),
            errors.NotLeader(None),
        ),
    },
    ForwardedFromAFollowerTests.check_leader_error_passes_through,
)


class NoWorker:
    """The real leader's own worker in RealLeaderTests: it runs nothing."""

    incarnation = 1

    def running_job_ids(self):
        return []

    def free_slots(self):
        return 0


class RealLeaderTests(unittest.TestCase):
    """A follower's router with a real LeaderClient, calling a real leader's gRPC server
    (SchedulerService and InternalService) on the real reactor."""

    @defer.inlineCallbacks
    def setUp(self):
        from twisted.internet import reactor

        self.leader = build(reactor)
        self.leader.raft.startService()
        self.addCleanup(self.leader.raft.stopService)
        dispatcher = Dispatcher(
            1,
            self.leader.raft,
            self.leader.table,
            Assigner(),
            NoWorker(),
            self.leader.registry,
            0,
            lambda: True,
            reactor,
        )
        bridge = ReactorBridge(reactor)
        wire = Wire()
        own_client = LeaderClient(lambda: None, wire, reactor)  # a leader asks nobody
        self.addCleanup(own_client.close)
        own_router = Router(self.leader.api, own_client)
        server = GrpcServerService(
            "127.0.0.1",
            0,
            [
                SchedulerServicer(self.leader.api, own_router, bridge).register,
                InternalServicer(self.leader.api, dispatcher, bridge).register,
            ],
            wire,
        )
        server.startService()
        self.addCleanup(server.stopService)
        yield wait_until(self.leader.api.is_ready, "a node alone elected itself")

        self.follower = build(reactor, node_id=2, port=50052)  # never started: no leader
        self.leader_address = f"127.0.0.1:{server.port}"
        self.client = LeaderClient(lambda: self.leader_address, wire, reactor)
        self.addCleanup(self.client.close)
        self.router = Router(self.follower.api, self.client)

    @defer.inlineCallbacks
    def test_forwarded_writes_reach_the_leader(self):
        job_id, status = yield self.router.submit(SUBMISSION)
        self.assertEqual(status, "pending")
        self.assertEqual(self.leader.table.get(job_id).command, "echo hi")
        self.assertIsNone(self.follower.table.get(job_id))
        cancelled = yield self.router.cancel(job_id.upper())
        self.assertEqual(cancelled, job_id)
        self.assertIs(self.leader.table.get(job_id).status, JobStatus.CANCELLED)

    @defer.inlineCallbacks
    def test_forwarded_results_and_heartbeats_reach_the_leader(self):
        job_id, _status = yield self.router.submit(SUBMISSION)
        yield self.leader.raft.propose(commands.assign_job(job_id, 2, 1))
        yield self.router.deliver_results([commands.status_update(job_id, result(), 2, 1)])
        self.assertIs(self.leader.table.get(job_id).status, JobStatus.COMPLETED)
        request = pb.WorkerHeartbeatRequest(node_id=2, free_slots=3, draining=True, incarnation=9)
        yield self.router.send_heartbeat(request, 5.0)
        self.assertEqual(self.leader.registry.latest(2).incarnation, 9)
        self.assertTrue(self.leader.registry.is_draining(2))
        view = yield self.router.cluster_status()
        self.assertEqual(view, self.leader.api.cluster_view())

    @defer.inlineCallbacks
    def test_the_leaders_typed_errors_come_back_typed(self):
        unknown = str(uuid.uuid4())
        with self.assertRaises(errors.NotFound) as caught:
            yield self.router.cancel(unknown)
        self.assertEqual(caught.exception.message, "job not found")
        job_id, _status = yield self.router.submit(SUBMISSION)
        yield self.router.cancel(job_id)
        with self.assertRaises(errors.AlreadyTerminal) as caught:
            yield self.router.cancel(job_id)
        self.assertEqual(caught.exception.message, "job is already cancelled")
        self.leader.drain_flag.active = True
        with self.assertRaises(errors.Draining):
            yield self.router.submit(SUBMISSION)

    @defer.inlineCallbacks
    def test_no_leader_known_and_leader_unreachable(self):
        self.leader_address = None
        with self.assertRaises(errors.NoLeader) as caught:
            yield self.router.cluster_status()
        self.assertEqual(caught.exception.message, "Leader unknown, please retry later")
        self.leader_address = "127.0.0.1:1"  # nothing listens there
        with self.assertRaises(errors.LeaderUnreachable) as caught:
            yield self.router.raft_log(0, 0)
        self.assertFalse(hasattr(caught.exception, "leader_address"))  # no use as a hint
        self.assertEqual(caught.exception.code, "NO_LEADER")
