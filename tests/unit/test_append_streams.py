"""AppendEntries on one stream per peer (raft/append_streams.py) between two real
grpc.aio servers on the real reactor: answers in order on one stream, the follower
told when its leader's stream ends, an older peer
(no AppendEntriesStream) served by unary calls for a while, a request not answered in time fails
and the next one goes on a new stream, a follower's error ends the stream with its
code, and a stream is refused what a unary call would be (a claimed leader that is no
peer, a request that cannot be decoded).
"""

from __future__ import annotations

import grpc
from twisted.internet import defer, threads
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched._proto import scheduler_pb2 as pb
from jobsched.api.raft_servicer import GIVE_UP_FLOOR, RaftServicer
from jobsched.errors import RaftStopped
from jobsched.interfaces import IEventLoopUser
from jobsched.net.access import AccessPolicy
from jobsched.net.bridge import ReactorBridge
from jobsched.net.channels import Wire
from jobsched.net.outbound import CallFailed
from jobsched.net.server import GrpcServerService
from jobsched.raft import messages
from jobsched.raft.append_streams import AppendStreams
from jobsched.raft.transport import GrpcTransport
from tests.unit.test_cluster_api import wait_until

LEADER, FOLLOWER = 1, 2
STUCK_TERM = 99  # the follower never answers a request of this term
FAILING_TERM = 98  # the follower answers a request of this term with RaftStopped


class FollowerRaft:
    """Answers AppendEntries at once (match_index = prev_log_index + entries), and
    keeps the order it saw them in."""

    node_id = FOLLOWER

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.disconnected: list[tuple[int, int]] = []
        self.stuck: list[int] = []  # requests left unanswered

    def leader_disconnected(self, leader_id: int, term: int) -> None:
        self.disconnected.append((leader_id, term))

    def handle(self, request):
        if request.term == STUCK_TERM:
            self.stuck.append(request.prev_log_index)
            return defer.Deferred()
        if request.term == FAILING_TERM:
            raise RaftStopped()
        self.seen.append(request.prev_log_index)
        return messages.AppendEntriesResponse(
            term=request.term, success=True, match_index=request.prev_log_index
        )


class CountingServicer(RaftServicer):
    """RaftServicer that counts unary AppendEntries calls."""

    unary_calls = 0

    async def AppendEntries(self, request, context):
        self.unary_calls += 1
        return await super().AppendEntries(request, context)


def older_registration(servicer: RaftServicer):
    """Registers RaftService as a node of the version before streams served it."""

    def register(server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            servicer.AppendEntries,
            request_deserializer=pb.AppendEntriesRequest.FromString,
            response_serializer=pb.AppendEntriesResponse.SerializeToString,
        )
        handlers = {"AppendEntries": handler}
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("scheduler.RaftService", handlers),)
        )

    return register


def append(prev_log_index: int, term: int = 3, leader_id: int = LEADER):
    return messages.AppendEntriesRequest(
        term=term,
        leader_id=leader_id,
        prev_log_index=prev_log_index,
        prev_log_term=term,
        entries=(),
        leader_commit=0,
    )


class AppendStreamTests(unittest.TestCase):
    def start_follower(self, older: bool = False, give_up_floor: float = GIVE_UP_FLOOR) -> str:
        from twisted.internet import reactor

        self.follower = FollowerRaft()
        self.servicer = CountingServicer(
            self.follower, ReactorBridge(reactor), give_up_floor=give_up_floor
        )
        register = older_registration(self.servicer) if older else self.servicer.register
        access = AccessPolicy({LEADER: None}, tls=False)
        server = GrpcServerService("127.0.0.1", 0, [register], Wire(), reactor, access)
        server.startService()
        self.addCleanup(server.stopService)
        return f"127.0.0.1:{server.port}"

    def start_leader(
        self, follower_address: str, timeout: float = 5.0, unary_seconds: float = 60.0
    ) -> GrpcTransport:
        """A transport whose streams run on the loop of a server of its own, as a
        node's do."""
        from twisted.internet import reactor

        self.streams = AppendStreams(reactor, Wire().open_aio_channel, unary_seconds)
        self.assertTrue(verifyObject(IEventLoopUser, self.streams))
        transport = GrpcTransport(
            {FOLLOWER: follower_address}, Wire(), reactor, rpc_timeout=timeout, streams=self.streams
        )
        self.addCleanup(transport.close)
        server = GrpcServerService("127.0.0.1", 0, [], Wire(), reactor, loop_users=[self.streams])
        server.startService()
        self.addCleanup(lambda: server.running and server.stopService())
        self.leader_server = server
        return transport

    @defer.inlineCallbacks
    def test_requests_are_answered_in_order_on_one_stream(self):
        transport = self.start_leader(self.start_follower())
        answers = yield defer.gatherResults(
            [transport.send(FOLLOWER, append(index)) for index in range(1, 6)]
        )
        self.assertEqual([a.match_index for a in answers], [1, 2, 3, 4, 5])
        self.assertEqual(self.follower.seen, [1, 2, 3, 4, 5])
        self.assertEqual(self.servicer.unary_calls, 0)

    @defer.inlineCallbacks
    def test_the_follower_hears_when_its_leader_disconnects(self):
        transport = self.start_leader(self.start_follower())
        yield transport.send(FOLLOWER, append(1, term=4))
        self.assertEqual(self.follower.disconnected, [])
        yield self.leader_server.stopService()  # as when the leader's process ends
        yield wait_until(lambda: self.follower.disconnected, "the follower heard it", 10)
        self.assertEqual(self.follower.disconnected, [(LEADER, 4)])

    @defer.inlineCallbacks
    def test_a_stream_the_leader_ends_for_a_late_answer_is_no_disconnection(self):
        transport = self.start_leader(self.start_follower(), timeout=0.5)
        yield self.assertFailure(transport.send(FOLLOWER, append(1, term=STUCK_TERM)), CallFailed)
        yield transport.send(FOLLOWER, append(2, term=4))  # on a new stream
        yield self.leader_server.stopService()
        yield wait_until(lambda: self.follower.disconnected, "the follower heard it", 10)
        self.assertEqual(self.follower.disconnected, [(LEADER, 4)])  # not (LEADER, STUCK_TERM)

    @defer.inlineCallbacks
    def test_a_leader_that_disconnects_while_its_request_is_answered_is_heard(self):
        """Within the floor after the request came: a floor of 30 s here, so that a busy
        machine's slow stop of the leader cannot pass it."""
        transport = self.start_leader(self.start_follower(give_up_floor=30.0))
        unanswered = transport.send(FOLLOWER, append(1, term=STUCK_TERM))
        unanswered.addErrback(lambda failure: failure.trap(CallFailed))
        yield wait_until(lambda: self.follower.stuck, "the request to arrive", 10)
        yield self.leader_server.stopService()  # the leader's process ends meanwhile
        yield wait_until(lambda: self.follower.disconnected, "the follower heard it", 10)
        self.assertEqual(self.follower.disconnected, [(LEADER, STUCK_TERM)])

    @defer.inlineCallbacks
    def test_an_older_peer_is_sent_unary_calls_for_a_while(self):
        address = self.start_follower(older=True)
        transport = self.start_leader(address, unary_seconds=1.0)
        yield self.assertFailure(transport.send(FOLLOWER, append(1)), CallFailed)
        self.assertFalse(self.streams.serves(address))
        answer = yield transport.send(FOLLOWER, append(2))
        self.assertEqual((answer.success, answer.match_index), (True, 2))
        self.assertEqual(self.servicer.unary_calls, 1)
        yield wait_until(lambda: self.streams.serves(address), "a stream tried again", 10)

    @defer.inlineCallbacks
    def test_a_request_not_answered_in_time_fails_and_the_next_opens_a_new_stream(self):
        transport = self.start_leader(self.start_follower(), timeout=0.5)
        stuck = yield self.assertFailure(
            transport.send(FOLLOWER, append(1, term=STUCK_TERM)), CallFailed
        )
        self.assertEqual(stuck.code, grpc.StatusCode.DEADLINE_EXCEEDED)
        answer = yield transport.send(FOLLOWER, append(2))
        self.assertEqual(answer.match_index, 2)
        self.assertEqual(self.servicer.unary_calls, 0)

    @defer.inlineCallbacks
    def test_an_error_of_the_follower_ends_the_stream_with_its_code(self):
        transport = self.start_leader(self.start_follower())
        failed = yield self.assertFailure(
            transport.send(FOLLOWER, append(1, term=FAILING_TERM)), CallFailed
        )
        self.assertEqual(failed.error_code, RaftStopped.code)
        answer = yield transport.send(FOLLOWER, append(2))
        self.assertEqual(answer.match_index, 2)

    @defer.inlineCallbacks
    def test_a_claimed_leader_that_is_no_peer_is_refused(self):
        transport = self.start_leader(self.start_follower())
        refused = yield self.assertFailure(
            transport.send(FOLLOWER, append(1, leader_id=7)), CallFailed
        )
        self.assertEqual(refused.code, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("node 7 is not a peer", refused.details)
        self.assertEqual(self.follower.seen, [])

    @defer.inlineCallbacks
    def test_a_request_that_cannot_be_decoded_ends_the_stream_as_invalid(self):
        address = self.start_follower()
        good = append(1)
        raw = pb.AppendEntriesRequest(term=good.term, leader_id=LEADER).SerializeToString()

        def blocking():
            with grpc.insecure_channel(address) as channel:
                call = channel.stream_stream("/scheduler.RaftService/AppendEntriesStream")
                try:
                    return list(call(iter([raw, b"\xff\xff\xff"]), timeout=10))
                except grpc.RpcError as error:
                    return error

        answer = yield threads.deferToThread(blocking)
        self.assertIsInstance(answer, grpc.RpcError, answer)
        self.assertEqual(answer.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("Malformed request", answer.details())
        self.assertEqual(self.follower.seen, [0])
