"""AsyncCaller: the node's outbound calls on a grpc.aio loop of its own, as Deferreds
that fire on the reactor; answers, failures, cancelling, and the stopped caller.

The server is a real GrpcServerService on 127.0.0.1 with a RaftService servicer whose
Raft is a stand-in the test controls.
"""

from __future__ import annotations

import grpc
from twisted.internet import defer, reactor, task
from twisted.python import threadable
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched._proto import scheduler_pb2_grpc as pb_grpc
from jobsched.api.raft_servicer import RaftServicer
from jobsched.net.bridge import ReactorBridge
from jobsched.net.channels import Wire
from jobsched.net.outbound import AsyncCaller, CallFailed
from jobsched.net.server import GrpcServerService
from jobsched.raft.messages import VoteResponse
from tests.nodeproc import free_port


class StandInRaft:
    """Answers every vote request with the term it asked for; holds back the answers
    while `held` is a list."""

    def __init__(self) -> None:
        self.held = None

    def handle(self, request):
        if self.held is not None:
            d = defer.Deferred()
            self.held.append(d)
            return d
        return defer.succeed(VoteResponse(request.term, True))


class AsyncCallerTests(unittest.TestCase):
    def setUp(self):
        self.raft = StandInRaft()
        server = GrpcServerService(
            "127.0.0.1",
            0,
            [RaftServicer(self.raft, ReactorBridge(reactor)).register],
            Wire(),
        )
        server.startService()
        self.addCleanup(server.stopService)
        self.address = f"127.0.0.1:{server.port}"
        self.caller = AsyncCaller(reactor, Wire())
        self.caller.startService()
        self.addCleanup(self.caller.stopService)

    def vote(self, address: str, term: int = 7, timeout: float = 5) -> defer.Deferred:
        request = pb.VoteRequest(term=term, candidate_id=2)
        return self.caller.call(address, pb_grpc.RaftServiceStub, "RequestVote", request, timeout)

    @defer.inlineCallbacks
    def test_an_answer_arrives_on_the_reactor_thread(self):
        threads = []
        answer = yield self.vote(self.address).addCallback(
            lambda r: threads.append(threadable.isInIOThread()) or r
        )
        self.assertEqual((answer.term, answer.vote_granted), (7, True))
        self.assertEqual(threads, [True])

    @defer.inlineCallbacks
    def test_many_calls_at_once_each_get_their_own_answer(self):
        answers = yield defer.gatherResults([self.vote(self.address, term) for term in range(50)])
        self.assertEqual([a.term for a in answers], list(range(50)))

    @defer.inlineCallbacks
    def test_nobody_listening_is_a_call_failed(self):
        with self.assertRaises(CallFailed) as caught:
            yield self.vote(f"127.0.0.1:{free_port()}", timeout=2)
        self.assertIn(
            caught.exception.code,
            (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED),
        )

    @defer.inlineCallbacks
    def test_a_late_answer_is_a_deadline_failure(self):
        self.raft.held = []
        with self.assertRaises(CallFailed) as caught:
            yield self.vote(self.address, timeout=0.2)
        self.assertEqual(caught.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)
        for held in self.raft.held:
            held.callback(VoteResponse(1, False))

    @defer.inlineCallbacks
    def test_cancelling_the_deferred_cancels_the_call(self):
        self.raft.held = []
        call = self.vote(self.address, timeout=30)
        started = reactor.seconds()
        while not self.raft.held and reactor.seconds() - started < 10:
            yield task.deferLater(reactor, 0.01, lambda: None)
        call.cancel()
        with self.assertRaises(defer.CancelledError):
            yield call
        for held in self.raft.held:
            held.callback(VoteResponse(1, False))

    @defer.inlineCallbacks
    def test_a_stopped_caller_fails_at_once(self):
        yield self.caller.stopService()
        failure = self.failureResultOf(self.vote(self.address), CallFailed)
        self.assertEqual(failure.value.code, grpc.StatusCode.UNAVAILABLE)
