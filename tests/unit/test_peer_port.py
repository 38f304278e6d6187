"""AppendEntries on the peer port (api/peer_port.py answering, raft/peer_links.py
sending) over real TCP and TLS on 127.0.0.1, on the real reactor: a follower's gRPC
answers name its peer port and the leader's next requests go there, answered in order;
the follower hears when its leader's connection ends (not when the leader gave up on a
late answer); a port that cannot be reached sends appends back to gRPC for a while; a
follower's error, a claimed leader that is no peer, a certificate that is not the
claimed node's and frames that do not decode each end the connection and change
nothing.
"""

from __future__ import annotations

import random
import socket
import struct

import grpc
from twisted.internet import defer, task, threads
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from jobsched._proto import scheduler_pb2 as pb
from jobsched.api.peer_port import PeerPortService
from jobsched.errors import RaftStopped
from jobsched.identity import TlsFiles
from jobsched.interfaces import IApiServer, IPeerLinks
from jobsched.metrics import NodeMetrics
from jobsched.net.access import AccessPolicy
from jobsched.net.bridge import ReactorBridge
from jobsched.net.channels import Wire
from jobsched.net.frames import SIDE_FRAME
from jobsched.net.outbound import CallFailed
from jobsched.net.server import GrpcServerService, PortUnavailable
from jobsched.raft.peer_links import PeerLinks
from jobsched.raft.transport import GrpcTransport
from tests.pki import Pki
from tests.unit.test_append_streams import (
    FAILING_TERM,
    FOLLOWER,
    LEADER,
    STUCK_TERM,
    CountingServicer,
    FollowerRaft,
    append,
)
from tests.unit.test_cluster_api import wait_until


def errors_counted(metrics: NodeMetrics, code: str) -> float:
    return (
        metrics.registry.get_sample_value(
            "jobsched_grpc_errors_total", {"method": "AppendEntries", "code": code}
        )
        or 0.0
    )


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PeerPortHarness:
    """A follower's peer port and a leader's links on 127.0.0.1, for a TestCase."""

    def start_follower(self, wire: Wire | None = None, told_port=None, raft=None) -> None:
        """A follower (`raft`, default a FollowerRaft) serving RaftService on gRPC and
        its peer port; its gRPC answers name `told_port()` (default: the peer port it
        listens on)."""
        from twisted.internet import reactor

        wire = wire or Wire()
        self.follower = raft or FollowerRaft()
        self.metrics = NodeMetrics()
        access = AccessPolicy({LEADER: None}, tls=wire.secure)
        self.peer_port = PeerPortService(
            self.follower, access, wire, reactor, "127.0.0.1", 0, self.metrics
        )
        self.peer_port.startService()
        self.addCleanup(lambda: self.peer_port.running and self.peer_port.stopService())
        told = told_port or (lambda: self.peer_port.port)
        self.servicer = CountingServicer(self.follower, ReactorBridge(reactor), self.metrics, told)
        server = GrpcServerService("127.0.0.1", 0, [self.servicer.register], wire, reactor, access)
        server.startService()
        self.addCleanup(server.stopService)
        self.follower_address = f"127.0.0.1:{server.port}"

    def start_leader(
        self, wire: Wire | None = None, timeout: float = 5.0, retry_seconds: float = 60.0
    ) -> GrpcTransport:
        """A leader's transport without streams: AppendEntries go as unary calls until
        an answer names the peer port."""
        from twisted.internet import reactor

        wire = wire or Wire()
        self.links = PeerLinks(reactor, wire, {FOLLOWER: "127.0.0.1"}, retry_seconds)
        self.assertTrue(verifyObject(IPeerLinks, self.links))
        transport = GrpcTransport(
            {FOLLOWER: self.follower_address}, wire, reactor, rpc_timeout=timeout, links=self.links
        )
        self.addCleanup(transport.close)
        return transport

    @defer.inlineCallbacks
    def answered_on_the_peer_port(self, transport, term: int = 3):
        """Send until the leader has learned the peer port (one unary call)."""
        first = yield transport.send(FOLLOWER, append(1, term=term))
        self.assertEqual(first.match_index, 1)
        self.assertTrue(self.links.serves(FOLLOWER))
        self.assertEqual(self.servicer.unary_calls, 1)

    def reactor(self):
        from twisted.internet import reactor

        return reactor


class PeerPortTests(PeerPortHarness, unittest.TestCase):
    def test_the_peer_port_provides_its_interface(self):
        self.start_follower()
        self.assertTrue(verifyObject(IApiServer, self.peer_port))
        self.assertNotEqual(self.peer_port.port, 0)

    def test_a_port_in_use_is_refused_at_start(self):
        from twisted.internet import reactor

        self.start_follower()
        taken = PeerPortService(
            FollowerRaft(),
            AccessPolicy({}, tls=False),
            Wire(),
            reactor,
            "127.0.0.1",
            self.peer_port.port,
        )
        error = self.assertRaises(PortUnavailable, taken.startService)
        self.assertIn(f"--peer-port {self.peer_port.port}", str(error))

    @defer.inlineCallbacks
    def test_answers_name_the_peer_port_and_the_next_requests_go_there_in_order(self):
        self.start_follower()
        transport = self.start_leader()
        yield self.answered_on_the_peer_port(transport)
        answers = yield defer.gatherResults(
            [transport.send(FOLLOWER, append(index)) for index in range(2, 7)]
        )
        self.assertEqual([a.match_index for a in answers], [2, 3, 4, 5, 6])
        self.assertEqual(self.follower.seen, [1, 2, 3, 4, 5, 6])
        self.assertEqual(self.servicer.unary_calls, 1)
        received = self.metrics.registry.get_sample_value(
            "jobsched_raft_appends_received_total", {"via": "peer_port"}
        )
        self.assertEqual(received, 5)

    @defer.inlineCallbacks
    def test_the_follower_hears_when_its_leader_disconnects(self):
        self.start_follower()
        transport = self.start_leader()
        yield self.answered_on_the_peer_port(transport, term=4)
        yield transport.send(FOLLOWER, append(2, term=4))
        self.assertEqual(self.follower.disconnected, [])
        transport.close()  # as when the leader's process ends
        yield wait_until(lambda: self.follower.disconnected, "the follower heard it", 10)
        self.assertEqual(self.follower.disconnected, [(LEADER, 4)])

    @defer.inlineCallbacks
    def test_a_connection_the_leader_ends_for_a_late_answer_is_no_disconnection(self):
        self.start_follower()
        transport = self.start_leader(timeout=0.5)
        yield self.answered_on_the_peer_port(transport, term=4)
        late = yield self.assertFailure(
            transport.send(FOLLOWER, append(2, term=STUCK_TERM)), CallFailed
        )
        self.assertEqual(late.code, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertTrue(self.links.serves(FOLLOWER))
        answer = yield transport.send(FOLLOWER, append(3, term=4))  # a new connection
        self.assertEqual(answer.match_index, 3)
        self.assertEqual(self.servicer.unary_calls, 1)
        transport.close()
        yield wait_until(lambda: self.follower.disconnected, "the follower heard it", 10)
        self.assertEqual(self.follower.disconnected, [(LEADER, 4)])  # not (LEADER, STUCK_TERM)

    @defer.inlineCallbacks
    def test_an_error_of_the_follower_ends_the_connection(self):
        self.start_follower()
        transport = self.start_leader()
        yield self.answered_on_the_peer_port(transport)
        yield self.assertFailure(transport.send(FOLLOWER, append(2, term=FAILING_TERM)), CallFailed)
        self.assertEqual(errors_counted(self.metrics, RaftStopped.code), 1)
        answer = yield transport.send(FOLLOWER, append(3))
        self.assertEqual(answer.match_index, 3)
        self.assertEqual(self.follower.seen, [1, 3])

    @defer.inlineCallbacks
    def test_a_port_that_cannot_be_reached_sends_appends_back_to_grpc_for_a_while(self):
        dead_port = unused_port()
        self.start_follower(told_port=lambda: dead_port)
        transport = self.start_leader(retry_seconds=1.0)
        yield transport.send(FOLLOWER, append(1))  # unary; names the dead port
        self.assertTrue(self.links.serves(FOLLOWER))
        failed = yield self.assertFailure(transport.send(FOLLOWER, append(2)), CallFailed)
        self.assertEqual(failed.code, grpc.StatusCode.UNAVAILABLE)
        for index in (3, 4):
            answer = yield transport.send(FOLLOWER, append(index))
            self.assertEqual(answer.match_index, index)
        self.assertFalse(self.links.serves(FOLLOWER))
        self.assertEqual(self.servicer.unary_calls, 3)
        deadline = self.reactor().seconds() + 10
        while not self.links.serves(FOLLOWER):  # each answer names the port again
            self.assertLess(self.reactor().seconds(), deadline, "the port never tried again")
            yield task.deferLater(self.reactor(), 0.05, lambda: None)
            yield transport.send(FOLLOWER, append(5))

    @defer.inlineCallbacks
    def test_a_follower_that_restarts_on_another_port_is_found_again(self):
        self.start_follower()
        transport = self.start_leader()
        yield self.answered_on_the_peer_port(transport)
        yield transport.send(FOLLOWER, append(2))
        yield self.peer_port.stopService()  # its connection closes, as when it stops
        yield wait_until(lambda: not self.links.serves(FOLLOWER), "the port forgotten", 10)
        access = AccessPolicy({LEADER: None}, tls=False)
        self.peer_port = PeerPortService(
            self.follower, access, Wire(), self.reactor(), "127.0.0.1", 0, self.metrics
        )
        self.peer_port.startService()
        for index in (3, 4):  # 3 on gRPC, whose answer names the new port; 4 there
            answer = yield transport.send(FOLLOWER, append(index))
            self.assertEqual(answer.match_index, index)
        received = self.metrics.registry.get_sample_value(
            "jobsched_raft_appends_received_total", {"via": "peer_port"}
        )
        self.assertEqual((received, self.servicer.unary_calls), (2, 2))

    @defer.inlineCallbacks
    def test_a_claimed_leader_that_is_no_peer_is_refused_and_changes_nothing(self):
        self.start_follower()
        self.links = PeerLinks(self.reactor(), Wire(), {FOLLOWER: "127.0.0.1"})
        self.addCleanup(self.links.close)
        self.links.learn_port(FOLLOWER, self.peer_port.port)
        request = pb.AppendEntriesRequest(term=3, leader_id=7, prev_log_index=1)
        yield self.assertFailure(self.links.send(FOLLOWER, request, 5.0), CallFailed)
        self.assertEqual(self.follower.seen, [])
        self.assertEqual(errors_counted(self.metrics, "PERMISSION_DENIED"), 1)
        self.assertFalse(self.links.serves(FOLLOWER), "ended before any answer")

    @defer.inlineCallbacks
    def test_a_request_for_another_node_is_refused_and_sends_appends_back_to_grpc(self):
        """As when a node restarted and another took the port it had (one host)."""
        self.start_follower()
        transport = self.start_leader()
        yield self.answered_on_the_peer_port(transport)
        self.links._hosts[3] = "127.0.0.1"
        self.links.learn_port(3, self.peer_port.port)  # node 3 "had" this port
        request = pb.AppendEntriesRequest(term=3, leader_id=LEADER, prev_log_index=2)
        yield self.assertFailure(self.links.send(3, request, 5.0), CallFailed)
        self.assertEqual(self.follower.seen, [1])
        self.assertEqual(errors_counted(self.metrics, "FAILED_PRECONDITION"), 1)
        self.assertFalse(self.links.serves(3))
        answer = yield transport.send(FOLLOWER, append(2))
        self.assertEqual((answer.match_index, self.follower.seen), (2, [1, 2]))

    @defer.inlineCallbacks
    def test_frames_that_do_not_decode_or_are_too_long_end_the_connection(self):
        self.start_follower()
        rng = random.Random(20261203)
        frames = [struct.pack(">I", 3) + b"\xff\xff\xff", struct.pack(">I", 2**31 - 1)]
        frames.append(struct.pack(">I", 2**32 - 1))  # a side frame, too long
        frames += [
            struct.pack(">I", size | side) + rng.randbytes(size)
            for size, side in (
                (rng.randrange(1, 200), rng.choice([0, SIDE_FRAME])) for _ in range(60)
            )
        ]
        endings = yield threads.deferToThread(self._each_frame_alone, frames)
        self.assertEqual(endings, [b""] * len(frames), "the follower closed each connection")
        self.assertEqual(self.follower.seen, [])

    def _each_frame_alone(self, frames: list[bytes]) -> list[bytes]:
        endings = []
        for frame in frames:
            with socket.create_connection(("127.0.0.1", self.peer_port.port), timeout=10) as conn:
                conn.sendall(frame)
                try:
                    endings.append(conn.recv(64))
                except ConnectionResetError:
                    endings.append(b"")
        return endings

    @defer.inlineCallbacks
    def test_with_tls_only_the_claimed_nodes_certificate_is_answered(self):
        pki = Pki(self.mktemp()).nodes(LEADER, FOLLOWER, 7)

        def wire_of(node_id: int) -> Wire:
            cert, key = pki.node(node_id)
            return Wire(TlsFiles(str(pki.ca_path), str(cert), str(key)))

        self.start_follower(wire_of(FOLLOWER))
        transport = self.start_leader(wire_of(LEADER))
        yield self.answered_on_the_peer_port(transport)
        answer = yield transport.send(FOLLOWER, append(2))
        self.assertEqual(answer.match_index, 2)

        thief = PeerLinks(self.reactor(), wire_of(7), {FOLLOWER: "127.0.0.1"})
        self.addCleanup(thief.close)
        thief.learn_port(FOLLOWER, self.peer_port.port)
        claimed = pb.AppendEntriesRequest(term=3, leader_id=LEADER, prev_log_index=3)
        yield self.assertFailure(thief.send(FOLLOWER, claimed, 5.0), CallFailed)
        self.assertEqual(self.follower.seen, [1, 2])
        self.assertEqual(errors_counted(self.metrics, "PERMISSION_DENIED"), 1)
